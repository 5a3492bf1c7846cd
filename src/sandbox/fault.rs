//! Breaking a sandbox host on purpose, the way real hosts break, so `doctor` and the error paths
//! are tested against the real thing. Every fault lives in the host's own mount namespace or in
//! the sandbox's client files, and `sandbox up` repairs it (it restarts a host that does not
//! answer and rewrites known_hosts).

use std::fs;
use std::process::Command;

use anyhow::{bail, Context};

use super::state::State;
use super::{sshd, Sandbox};
use crate::exit::Failure;

/// A way to break one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `flock` and `setsid`, which activation's watchdog needs, are gone from the host.
    NoTools,
    /// The file system of the host's `/nix` has no free space left.
    FullStore,
    /// The host's `/nix` is mounted read-only.
    ReadonlyStore,
    /// The host presents a key other than the one in the sandbox's known_hosts.
    WrongHostKey,
    /// The host's sshd is stopped (the host's network stays up).
    SshdDown,
}

impl Fault {
    /// Every fault, by its name on the command line.
    pub const ALL: [(&'static str, Fault); 5] = [
        ("no-tools", Fault::NoTools),
        ("full-store", Fault::FullStore),
        ("readonly-store", Fault::ReadonlyStore),
        ("wrong-host-key", Fault::WrongHostKey),
        ("sshd-down", Fault::SshdDown),
    ];

    /// The fault called `name`, or an error listing the known ones.
    pub fn parse(name: &str) -> anyhow::Result<Fault> {
        Fault::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let known: Vec<&str> = Fault::ALL.iter().map(|(n, _)| *n).collect();
                Failure::input(format!(
                    "unknown sandbox fault '{name}'; known faults: {}",
                    known.join(", ")
                ))
                .into()
            })
    }
}

/// Hides the watchdog's tools: an empty, non-executable file is mounted over each.
const NO_TOOLS: &str = r#"for tool in flock setsid; do
  path=$(command -v "$tool") || continue
  mount --bind /dev/null "$path"
done"#;

/// Moves the host's `/nix` onto a tmpfs just big enough for what it holds, then fills it.
const FULL_STORE: &str = r#"set -e
used=$(du -sk /nix | { read -r kib _; echo "$kib"; })
mkdir -p /run/nixdeploy-sandbox-full
mount -t tmpfs -o size=$((used + 512))k nixdeploy-full /run/nixdeploy-sandbox-full
cp -a /nix/. /run/nixdeploy-sandbox-full/
dd if=/dev/zero of=/run/nixdeploy-sandbox-full/.filler bs=4k 2>/dev/null || true
mount --move /run/nixdeploy-sandbox-full /nix"#;

/// Remounts the host's `/nix` read-only.
const READONLY_STORE: &str = "mount -o remount,bind,ro /nix";

impl Sandbox {
    /// Breaks `host` with `fault` (see [`Fault`]).
    pub fn fault(&self, host: &str, fault: Fault) -> anyhow::Result<()> {
        let state = State::load(self.dir())?
            .ok_or_else(|| Failure::input(format!("no sandbox in {}", self.dir().display())))?;
        let Some(entry) = state.hosts.iter().find(|h| h.name == host) else {
            bail!(Failure::input(format!(
                "the sandbox in {} has no host '{host}'",
                self.dir().display()
            )));
        };
        let pid = entry
            .sshd_pid
            .filter(|pid| sshd::is_our_sshd(*pid, &entry.netns))
            .ok_or_else(|| Failure::input(format!("sandbox host {host} is not running")))?;
        match fault {
            Fault::NoTools => in_host(pid, host, NO_TOOLS),
            Fault::FullStore => in_host(pid, host, FULL_STORE),
            Fault::ReadonlyStore => in_host(pid, host, READONLY_STORE),
            Fault::SshdDown => {
                super::netns::terminate(&[pid]);
                Ok(())
            }
            Fault::WrongHostKey => self.swap_known_host_key(host),
        }
    }

    /// Replaces `host`'s key in known_hosts with one the host does not have.
    fn swap_known_host_key(&self, host: &str) -> anyhow::Result<()> {
        let scratch = tempfile::TempDir::new().context("failed to make a scratch directory")?;
        let key = scratch.path().join("impostor");
        sshd::ensure_key(&key, "not-the-host")?;
        let impostor = fs::read_to_string(key.with_extension("pub"))?;
        let impostor: Vec<&str> = impostor.split_whitespace().take(2).collect();
        let path = self.known_hosts();
        let text = fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let prefix = format!("{host},");
        let swapped: String = text
            .lines()
            .map(|line| match line.split_once(' ') {
                Some((names, _)) if line.starts_with(&prefix) => {
                    format!("{names} {}\n", impostor.join(" "))
                }
                _ => format!("{line}\n"),
            })
            .collect();
        fs::write(&path, swapped).with_context(|| format!("failed to write {}", path.display()))
    }
}

/// Runs `script` inside the mount namespace of the host whose sshd is `pid`.
fn in_host(pid: u32, host: &str, script: &str) -> anyhow::Result<()> {
    let out = Command::new("nsenter")
        .args([
            "--target",
            &pid.to_string(),
            "--mount",
            "--",
            "sh",
            "-c",
            script,
        ])
        .output()
        .context("failed to run nsenter (util-linux)")?;
    if !out.status.success() {
        bail!(
            "failed to break sandbox host {host}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_scripts_are_valid_shell() {
        for script in [NO_TOOLS, FULL_STORE, READONLY_STORE] {
            crate::transport::assert_valid_shell(script);
        }
    }

    #[test]
    fn unknown_faults_are_named_with_the_known_ones() {
        let err = Fault::parse("melted").unwrap_err().to_string();
        assert!(
            err.contains("'melted'") && err.contains("sshd-down"),
            "{err}"
        );
        assert_eq!(Fault::parse("no-tools").unwrap(), Fault::NoTools);
    }
}
