//! `copy(…, #{ import: true })`: the paths a host lacks, streamed from a local
//! `nix-store --export` into `nix-store --import` run as root on the host (through its
//! escalation). For a login the host's Nix does not trust, or a host without a Nix daemon.

use std::process::Stdio;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::transport::{command_line, Connection};

/// The argv that exports `paths` (dependencies first) from the local store.
pub fn export_argv(paths: &[String]) -> Vec<String> {
    let mut argv = vec!["nix-store".to_string(), "--export".to_string()];
    argv.extend(paths.iter().cloned());
    argv
}

/// The script that imports an export stream into the host's store, as root.
pub const IMPORT: &str = "nix-store --import";

/// Prints the store paths on stdin (one per line) that the host's store lacks, keeping their
/// order; run as root, since a login without a Nix daemon cannot open the store.
pub const INVALID: &str = "xargs -r nix-store --check-validity --print-invalid";

/// The paths of `path`'s local closure (dependencies first) that the host lacks.
pub async fn missing(conn: &Connection, path: &str) -> anyhow::Result<Vec<String>> {
    let closure = crate::nix::run_local(&crate::nix::closure_argv(path), &[], &|_, _| {}).await?;
    if !closure.success() {
        bail!(
            "cannot read the closure of {path} locally (build it first): {}",
            closure.error_line()
        );
    }
    let out = conn
        .run_root(INVALID, Some(closure.stdout.as_bytes()))
        .await?;
    let lines = out.lines_or(|| format!("cannot query the store of {}", conn.target().host))?;
    Ok(lines
        .into_iter()
        .filter(|l| l.starts_with("/nix/store/"))
        .collect())
}

/// Streams `missing` (in the order `nix-store -qR` gives, dependencies first) into the host.
/// Returns the paths the host reports as imported.
pub async fn import(conn: &Connection, missing: &[String]) -> anyhow::Result<Vec<String>> {
    let argv = export_argv(missing);
    let mut export = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("failed to start `{}`", command_line(&argv[..2])))?;
    let mut remote = conn.spawn_held_root(IMPORT).await?;
    let host = conn.target().host.clone();
    let mut from = export.stdout.take().context("export stdout")?;
    let mut export_err = export.stderr.take().context("export stderr")?;
    let mut to = remote.stdin().take().context("import stdin")?;
    let mut out = remote.stdout().take().context("import stdout")?;
    let mut err = remote.take_stderr().context("import stderr")?;
    let send = async {
        let sent = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
        drop(to);
        sent
    };
    let (mut said, mut complaint, mut local_complaint) = (Vec::new(), Vec::new(), Vec::new());
    let (sent, _, _, _) = tokio::join!(
        send,
        out.read_to_end(&mut said),
        err.read_to_end(&mut complaint),
        export_err.read_to_end(&mut local_complaint),
    );
    let exported = export.wait().await?;
    let imported = remote
        .wait()
        .await
        .map_err(|e| anyhow!("lost the connection to {host}: {e}"))?;
    if !exported.success() {
        bail!(
            "nix-store --export of {} path(s) failed: {}",
            missing.len(),
            last_line(&local_complaint)
        );
    }
    sent.map_err(|e| anyhow!("sending the export stream to {host} failed: {e}"))?;
    if !imported.success() {
        bail!(
            "nix-store --import on {host} failed: {}",
            last_line(&complaint)
        );
    }
    Ok(String::from_utf8_lossy(&said)
        .lines()
        .filter(|l| l.starts_with("/nix/store/"))
        .map(str::to_string)
        .collect())
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_lists_the_paths_in_the_order_given() {
        let argv = export_argv(&["/nix/store/a-dep".into(), "/nix/store/b-top".into()]);
        assert_eq!(
            argv,
            [
                "nix-store",
                "--export",
                "/nix/store/a-dep",
                "/nix/store/b-top"
            ]
        );
    }
}
