//! `diff`: compare the closure each host runs now with the one about to be deployed — read-only,
//! so it runs in dry runs too.

use std::sync::Arc;

use anyhow::{bail, Context as _};

use super::{fan_out_paths, HostResult, Outcome};
use crate::context::Context;
use crate::fleet::Host;
use crate::nix::run_local;
use crate::plan::closure::{
    parse_requisites, parse_sizes, path_info_argv, paths_on_stdin, requisites_argv, sizes_command,
};
use crate::plan::{parse_path_info_json, BootParts, ClosureDiff, StorePathInfo};
use crate::transport::{command_line, quote, Connection};

/// What deploying a host's new system would change.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Diffed {
    /// The new system path.
    pub path: String,
    /// The system the host runs now (`None` before its first deploy).
    pub before: Option<String>,
    /// The closure diff.
    pub diff: ClosureDiff,
    /// The diff as text (`no change` for identical closures).
    pub text: String,
    /// Both closures hold the same store paths.
    pub no_change: bool,
}

/// Diffs the closure each host runs against `path` of its `(host, path)` pair.
pub async fn diff(ctx: &Arc<Context>, items: Vec<(Arc<Host>, String)>) -> Vec<HostResult<Diffed>> {
    let c = ctx.clone();
    fan_out_paths(ctx, items, "diff", move |host, path| {
        let ctx = c.clone();
        async move {
            let value = closure_diff(&ctx, &host, &path).await?;
            let note = if value.no_change {
                "no change".to_string()
            } else {
                value.diff.summary()
            };
            Ok(Outcome::done(value).with_message(note))
        }
    })
    .await
}

/// The diff of one host, without reporting a step (the dry-run summary uses it directly).
pub async fn closure_diff(ctx: &Context, host: &Host, path: &str) -> anyhow::Result<Diffed> {
    if !host.has_system {
        anyhow::bail!(
            "{} has no system profile to diff (only {})",
            host.name,
            host.profiles
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let conn = ctx.pool.get(&ctx.target(host)).await?;
    let before = running_system(&conn).await?;
    let (old, boot_before) = match &before {
        Some(system) => (
            remote_closure(&conn, system).await?,
            remote_boot_parts(&conn, system).await,
        ),
        None => (Vec::new(), None),
    };
    let new = local_closure(path).await?;
    let boot_after = local_boot_parts(path);
    let diff =
        ClosureDiff::between_with_boot(&old, &new, boot_before.as_ref(), boot_after.as_ref());
    Ok(Diffed {
        path: path.to_string(),
        before,
        text: diff.render(),
        no_change: diff.is_empty(),
        diff,
    })
}

/// Where `/run/current-system` points on the host, if anywhere.
async fn running_system(conn: &Connection) -> anyhow::Result<Option<String>> {
    let out = conn
        .run("readlink -f /run/current-system 2>/dev/null || true", None)
        .await?;
    let system = out.stdout.trim();
    Ok(system
        .starts_with("/nix/store/")
        .then(|| system.to_string()))
}

/// The host's closure of `system`: `nix path-info` there, or `nix-store` where `nix` is missing.
async fn remote_closure(conn: &Connection, system: &str) -> anyhow::Result<Vec<StorePathInfo>> {
    let host = &conn.target().host;
    let out = conn
        .run(&command_line(&path_info_argv(system, None)), None)
        .await?;
    if out.success() {
        return parse_path_info_json(&out.stdout)
            .with_context(|| format!("failed to read the closure of {system} on {host}"));
    }
    let out = conn
        .run(&command_line(&requisites_argv(system)), None)
        .await?;
    if !out.success() {
        bail!(
            "cannot read the closure of {system} on {host}: {}",
            out.last_error_line()
        );
    }
    let paths = parse_requisites(&out.stdout);
    let sizes = conn
        .run(&sizes_command(), Some(&paths_on_stdin(&paths)))
        .await?;
    if !sizes.success() {
        bail!(
            "cannot read the sizes of {system}'s closure on {host}: {}",
            sizes.last_error_line()
        );
    }
    parse_sizes(&paths, &sizes.stdout)
}

/// The new closure, from the local store.
async fn local_closure(path: &str) -> anyhow::Result<Vec<StorePathInfo>> {
    let out = run_local(&path_info_argv(path, None), &[], &|_, _| {}).await?;
    if !out.success() {
        bail!(
            "cannot read the closure of {path} locally (build it first): {}",
            out.error_line()
        );
    }
    parse_path_info_json(&out.stdout)
        .with_context(|| format!("failed to read the closure of {path}"))
}

/// `readlink -f` of `kernel`, `initrd` and `init` in a system, as one remote command.
fn boot_parts_script(system: &str) -> String {
    ["kernel", "initrd", "init"]
        .iter()
        .map(|part| format!("readlink -f {} || echo", quote(&format!("{system}/{part}"))))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Boot parts from three lines of `readlink -f` output; `None` unless all three resolved.
fn parse_boot_parts(stdout: &str) -> Option<BootParts> {
    let parts: Vec<&str> = stdout.lines().map(str::trim).collect();
    match parts.as_slice() {
        [kernel, initrd, init, ..]
            if [kernel, initrd, init]
                .iter()
                .all(|p| p.starts_with("/nix/store/")) =>
        {
            Some(BootParts {
                kernel: kernel.to_string(),
                initrd: initrd.to_string(),
                init: init.to_string(),
            })
        }
        _ => None,
    }
}

async fn remote_boot_parts(conn: &Connection, system: &str) -> Option<BootParts> {
    let out = conn.run(&boot_parts_script(system), None).await.ok()?;
    parse_boot_parts(&out.stdout)
}

fn local_boot_parts(system: &str) -> Option<BootParts> {
    let resolve = |part: &str| {
        let target = std::fs::canonicalize(format!("{system}/{part}")).ok()?;
        Some(target.display().to_string())
    };
    Some(BootParts {
        kernel: resolve("kernel")?,
        initrd: resolve("initrd")?,
        init: resolve("init")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_parts_are_read_with_quoted_paths_and_need_all_three() {
        let script = boot_parts_script("/nix/store/x-sys tem");
        assert!(
            script.contains("readlink -f '/nix/store/x-sys tem/kernel'"),
            "{script}"
        );
        let parts =
            parse_boot_parts("/nix/store/k-linux\n/nix/store/i-initrd\n/nix/store/s-init\n");
        assert_eq!(parts.unwrap().initrd, "/nix/store/i-initrd");
        assert_eq!(
            parse_boot_parts("/nix/store/k-linux\n\n/nix/store/s-init\n"),
            None
        );
    }
}
