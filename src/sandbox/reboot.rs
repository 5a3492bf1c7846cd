//! A simulated reboot of one sandbox host: every process in it ends, its `/run` is emptied, it
//! gets a new boot id, comes up on its boot default (`/run/current-system`) and sshd starts again.
//! Works from the machine (`nixdeploy sandbox reboot`) and from inside the host (its `reboot`).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::state::{Lock, State};
use super::{netns, run, sshd, Sandbox};
use crate::exit::Failure;

/// The host's `reboot` command (first on its `PATH`): asks this binary to reboot the host, from
/// a process detached from the session (which the reboot ends).
pub fn reboot_command(exe: &Path, dir: &Path, host: &str) -> String {
    use crate::transport::quote;
    format!(
        "#!/bin/sh\n# Written by `nixdeploy sandbox up`: a simulated reboot of this host (docs/sandbox.md).\n\
         setsid {exe} sandbox reboot --dir {dir} {host} </dev/null >>{log} 2>&1 &\n",
        exe = quote(&exe.display().to_string()),
        dir = quote(&dir.display().to_string()),
        host = quote(host),
        log = quote(&dir.join("hosts").join(host).join("reboot.log").display().to_string()),
    )
}

impl Sandbox {
    /// Reboots host `name` (see the module documentation); returns its new sshd pid.
    pub fn reboot(&self, name: &str) -> anyhow::Result<u32> {
        let _lock = Lock::acquire(&self.dir.join(".lock"))?;
        let mut state = State::load(&self.dir)?
            .ok_or_else(|| Failure::input(format!("no sandbox in {}", self.dir.display())))?;
        let Some(i) = state.hosts.iter().position(|h| h.name == name) else {
            return Err(Failure::input(format!(
                "no host `{name}` in the sandbox in {}",
                self.dir.display()
            ))
            .into());
        };
        let host = state.hosts[i].clone();
        let dirs = self.host_dirs(name);
        let outside = Path::new("/run/netns").join(&host.netns);
        let inside = !outside.exists();
        let ns: PathBuf = if inside {
            // Run by the host's own `reboot`: its /run hides /run/netns.
            PathBuf::from("/proc/self/ns/net")
        } else {
            outside
        };
        let ino = fs::metadata(&ns)
            .with_context(|| format!("failed to find the network namespace of {name}"))?
            .ino();
        netns::terminate(&pids_in(ino));
        empty_dir(&dirs.run())?;
        sshd::new_boot_id(&dirs)?;
        boot(&dirs)?;
        let up = ["link", "set", "eth0", "up"];
        if inside {
            run("ip", &up)?;
        } else {
            run("ip", &[&["-n", host.netns.as_str()][..], &up[..]].concat())?;
        }
        let client_pub = self.identity().with_extension("pub");
        let builder = host.role == super::state::Role::Builder;
        sshd::prepare(&dirs, &host.address, builder, &client_pub)?;
        let pid = sshd::start_in(&ns, name, &host.address, &dirs)?;
        state.hosts[i].sshd_pid = Some(pid);
        state.save(&self.dir)?;
        Ok(pid)
    }
}

/// Every process (but this one) in the network namespace with inode `ino`.
fn pids_in(ino: u64) -> Vec<u32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| *pid != me)
                .filter(|pid| {
                    fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ino)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn empty_dir(dir: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("failed to read {}", dir.display()))? {
        let path = entry?.path();
        let gone = if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        gone.with_context(|| format!("failed to remove {}", path.display()))?;
    }
    Ok(())
}

/// What the boot loader does: the boot default becomes `/run/current-system` (and
/// `/run/booted-system`); without one the host comes up running nothing.
fn boot(dirs: &sshd::HostDirs) -> anyhow::Result<()> {
    let default = fs::read_to_string(dirs.persistent().join("boot")).unwrap_or_default();
    let default = default.trim();
    if default.is_empty() {
        return Ok(());
    }
    for link in ["current-system", "booted-system"] {
        std::os::unix::fs::symlink(default, dirs.run().join(link))
            .with_context(|| format!("failed to link /run/{link} on the host"))?;
    }
    Ok(())
}
