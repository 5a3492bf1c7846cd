//! `copy`: send each host's closure over its already open connection — only the paths it lacks,
//! and nothing at all when it already has the system.

use std::sync::Arc;

use anyhow::bail;

use super::{fan_out_paths, HostResult, Outcome};
use crate::context::Context;
use crate::fleet::Host;
use crate::nix::{run_local, StoreUri};
use crate::report::Event;
use crate::transport::{Connection, Stream};

/// Options of `copy`.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Let the target fetch paths from its own binary caches; `None` follows the host's
    /// `substituteOnDestination`, and yes when that is unset.
    pub substitute: Option<bool>,
}

/// What was (or would be) copied to one host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Copied {
    /// The system path.
    pub path: String,
    /// The store paths the host lacked.
    pub paths: Vec<String>,
}

/// Copies `path` of each `(host, path)` pair to its host.
pub async fn copy(
    ctx: &Arc<Context>,
    items: Vec<(Arc<Host>, String)>,
    opts: CopyOptions,
) -> Vec<HostResult<Copied>> {
    let c = ctx.clone();
    fan_out_paths(ctx, items, "copy", move |host, path| {
        let ctx = c.clone();
        let opts = opts.clone();
        async move { copy_one(&ctx, &host, &path, &opts).await }
    })
    .await
}

async fn copy_one(
    ctx: &Context,
    host: &Host,
    path: &str,
    opts: &CopyOptions,
) -> anyhow::Result<Outcome<Copied>> {
    let target = ctx.target(host);
    let conn = ctx.pool.get(&target).await?;
    // A real run only asks whether the host runs the system (or its profile points at it) —
    // the redeploy case; otherwise `nix copy` works out the missing paths itself and sends
    // nothing when there are none. The dry run lists exactly which paths would go.
    let wanted = wanted_paths(host, path);
    let missing = if ctx.options.dry_run {
        let mut all = Vec::new();
        for (p, _) in &wanted {
            all.extend(missing_paths(&conn, p).await?);
        }
        all
    } else {
        absent(&conn, &wanted).await?
    };
    let copied = Copied {
        path: path.to_string(),
        paths: missing.clone(),
    };
    if missing.is_empty() {
        return Ok(Outcome::skipped(copied, "already present"));
    }
    if ctx.options.dry_run {
        let n = missing.len();
        return Ok(Outcome::planned(copied, format!("would copy {n} path(s)")));
    }
    crate::activation::lock(ctx, host).await?;
    let substitute = opts.substitute.or(host.substitute).unwrap_or(true);
    // A prebuilt store path this machine does not have: the host substitutes it itself.
    let (here, elsewhere): (Vec<String>, Vec<String>) = missing
        .iter()
        .cloned()
        .partition(|p| std::path::Path::new(p).exists());
    for p in &elsewhere {
        let out = conn
            .run(&host.escalation.root(&realise_command(p)), None)
            .await?;
        if !out.success() {
            bail!(
                "{p} is not in this machine's store and {} cannot substitute it: {}; build or fetch it here first (nix-store --realise {p})",
                host.name,
                out.last_error_line()
            );
        }
    }
    if host.local {
        // This machine's store is the host's: what is built here is already there.
        return Ok(Outcome::skipped(
            copied,
            "local host: already in this machine's store",
        ));
    }
    if here.is_empty() {
        return Ok(Outcome::done(copied).with_message("substituted on the host"));
    }
    let argv = ctx
        .nix
        .copy_to(&StoreUri::of(&target), &here, substitute, false);
    let env = conn.nix_env()?;
    let reporter = ctx.reporter.clone();
    let name = host.name.clone();
    let on_line = move |_: Stream, line: &str| {
        reporter.emit(Event::Log {
            host: Some(name.clone()),
            step: "copy".into(),
            stream: "stderr",
            line: line.to_string(),
        });
    };
    let out = run_local(&argv, &env, &on_line).await?;
    if !out.success() {
        bail!("nix copy to {} failed: {}", host.name, out.error_line());
    }
    // What Nix really sent, from its own log.
    let sent: Vec<String> = out
        .stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix("copying path '"))
        .filter_map(|l| l.split('\'').next())
        .map(str::to_string)
        .collect();
    let n = sent.len();
    if n == 0 {
        // The host had the whole closure without running it (copied earlier, or `boot`).
        return Ok(Outcome::skipped(
            Copied {
                paths: sent,
                ..copied
            },
            "already present",
        ));
    }
    Ok(Outcome::done(Copied {
        paths: sent,
        ..copied
    })
    .with_message(format!("{n} path(s)")))
}

/// The store paths a host should have, each with the profile that points at it when deployed:
/// the system (unless the host has none) and every other profile.
fn wanted_paths(host: &Host, path: &str) -> Vec<(String, String)> {
    let mut wanted = Vec::new();
    if host.has_system && !path.is_empty() {
        wanted.push((path.to_string(), host.profile.clone()));
    }
    for p in &host.profiles {
        wanted.push((p.out_path.clone(), p.profile_path.clone()));
    }
    wanted
}

/// The paths of `wanted` the host neither runs nor has a profile pointing at. Either is a live
/// GC root, so its closure is on the host; `readlink`s answer without starting Nix there.
async fn absent(conn: &Connection, wanted: &[(String, String)]) -> anyhow::Result<Vec<String>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let out = conn.run(&absent_command(wanted), None).await?;
    if !out.success() {
        bail!(
            "cannot read the profiles of {}: {}",
            conn.target().host,
            out.last_error_line()
        );
    }
    Ok(out
        .stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

fn absent_command(wanted: &[(String, String)]) -> String {
    let checks: Vec<String> = wanted
        .iter()
        .map(|(path, profile)| {
            format!(
                "p={p}; [ \"$(readlink -f /run/current-system 2>/dev/null)\" = \"$p\" ] || \
                 [ \"$(readlink -f {profile} 2>/dev/null)\" = \"$p\" ] || echo \"$p\"",
                p = crate::transport::quote(path),
                profile = crate::transport::quote(profile),
            )
        })
        .collect();
    checks.join("; ") + "; true"
}

/// Has the host fetch a store path from its own substituters.
fn realise_command(path: &str) -> String {
    format!(
        "nix-store --realise {} >/dev/null",
        crate::transport::quote(path)
    )
}

/// The paths of `path`'s closure that the host's store lacks (empty when it has the system).
pub async fn missing_paths(conn: &Connection, path: &str) -> anyhow::Result<Vec<String>> {
    let probe = format!(
        "nix-store --check-validity {} 2>/dev/null",
        crate::transport::quote(path)
    );
    if conn.run(&probe, None).await?.success() {
        return Ok(Vec::new());
    }
    let closure = run_local(&crate::nix::closure_argv(path), &[], &|_, _| {}).await?;
    if !closure.success() {
        bail!(
            "cannot read the closure of {path} locally (build it first): {}",
            closure.error_line()
        );
    }
    let all: Vec<&str> = closure.stdout.lines().filter(|l| !l.is_empty()).collect();
    // On stdin, never in one argument: a closure of a few thousand paths exceeds the limit.
    let out = conn
        .run(
            &crate::plan::invalid_paths_command(),
            Some(&crate::plan::paths_on_stdin(&all)),
        )
        .await?;
    if !out.success() {
        bail!(
            "cannot query the store of {}: {}",
            conn.target().host,
            out.last_error_line()
        );
    }
    Ok(out
        .stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_presence_check_is_valid_shell_with_quoted_paths() {
        let c = absent_command(&[
            (
                "/nix/store/abc-x y".into(),
                "/nix/var/nix/profiles/system".into(),
            ),
            (
                "/nix/store/def-app".into(),
                "/nix/var/nix/profiles/app".into(),
            ),
        ]);
        assert!(c.starts_with("p='/nix/store/abc-x y';"));
        crate::transport::assert_valid_shell(&c);
        crate::transport::assert_valid_shell(&realise_command("/nix/store/a b"));
    }
}
