//! `copy`: send each host's closure over its already open connection — only the paths it lacks,
//! and nothing at all when it already has the system.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;

use super::{fan_out_paths, HostResult, Outcome};
use crate::context::Context;
use crate::fleet::Host;
use crate::nix::{run_local, StoreUri};
use crate::report::Event;
use crate::transport::{Connection, Stream};

/// Options of `copy`.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Let the target fetch paths from its own binary caches (on by default).
    pub substitute: bool,
    /// Send the missing paths through `nix-store --import` run as root (escalated) instead of
    /// `nix copy` (see `import.rs`).
    pub import: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            substitute: true,
            import: false,
        }
    }
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
    let missing = if ctx.options.dry_run && opts.import {
        super::import::missing(&conn, path).await?
    } else if ctx.options.dry_run {
        missing_paths(&conn, path).await?
    } else if has_system(&conn, path, &host.profile).await? {
        Vec::new()
    } else {
        vec![path.to_string()]
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
    if opts.import {
        let sent =
            super::import::import(&conn, &super::import::missing(&conn, path).await?).await?;
        let n = sent.len();
        let copied = Copied {
            paths: sent,
            ..copied
        };
        return Ok(if n == 0 {
            Outcome::skipped(copied, "already present")
        } else {
            Outcome::done(copied).with_message(format!("{n} path(s) imported"))
        });
    }
    let signing_key = signing_key(ctx, host);
    if let Some(key) = &signing_key {
        sign(ctx, key, path).await?;
    }
    let argv = ctx.nix.copy_to(
        &StoreUri::of(&target),
        &[path.to_string()],
        opts.substitute,
        false,
    );
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
        if refused_for_signatures(&out.stderr) {
            bail!("{}", untrusted_message(host, signing_key.as_deref()));
        }
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

/// The key that signs what is copied to `host`: `--sign-with`, else the host's `signingKey`.
fn signing_key(ctx: &Context, host: &Host) -> Option<PathBuf> {
    ctx.options
        .sign_with
        .clone()
        .or_else(|| host.signing_key.clone())
}

/// Every signing key the run may use exists and is readable: checked before any host is
/// touched, so a typo does not fail hosts after their closures were half copied.
pub fn check_signing_keys(ctx: &Context) -> anyhow::Result<()> {
    for host in &ctx.allowed {
        let Some(key) = signing_key(ctx, host) else {
            continue;
        };
        let origin = if ctx.options.sign_with.is_some() {
            "--sign-with".to_string()
        } else {
            format!("signingKey of host {}", host.name)
        };
        if let Err(e) = std::fs::File::open(&key) {
            return Err(crate::exit::Failure::input(format!(
                "{origin}: cannot read the secret key {} ({e}); make one with \
                 `nix key generate-secret --key-name NAME > FILE` (see docs/non-root.md)",
                key.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// Signs the closure of `path` in the local store with `key` (Nix adds each signature once).
async fn sign(ctx: &Context, key: &Path, path: &str) -> anyhow::Result<()> {
    let out = run_local(&ctx.nix.sign(key, path), &[], &|_, _| {}).await?;
    if !out.success() {
        bail!(
            "cannot sign {path} with {}: {}",
            key.display(),
            out.error_line()
        );
    }
    Ok(())
}

/// Whether the target refused paths for want of a signature it trusts.
fn refused_for_signatures(stderr: &str) -> bool {
    stderr.contains("lacks a signature by a trusted key")
        || stderr.contains("lacks a valid signature")
}

/// What to configure when a host refuses unsigned (or wrongly signed) paths.
fn untrusted_message(host: &Host, key: Option<&Path>) -> String {
    let login = host.target_user.as_deref().unwrap_or("the login");
    match key {
        None => format!(
            "host {name} refused the copied paths: its Nix does not trust {login} (not in \
             trusted-users) and the paths carry no signature it trusts; either set signingKey = \
             \"/path/to/secret-key\" in nixdeploy.defaults (or pass --sign-with FILE) and add its \
             public key to nix.settings.trusted-public-keys on {name}, or add {login} to \
             nix.settings.trusted-users on {name} (see docs/non-root.md)",
            name = host.name
        ),
        Some(key) => format!(
            "host {name} refused paths signed with {key}: add the key's public half \
             (`nix key convert-secret-to-public < {key}`) to nix.settings.trusted-public-keys on \
             {name}, or add {login} to nix.settings.trusted-users (see docs/non-root.md)",
            name = host.name,
            key = key.display()
        ),
    }
}

/// Does the host run `path`, or does its profile point at it? Either is a live GC root, so
/// its closure is on the host; two `readlink`s answer without starting Nix there.
async fn has_system(conn: &Connection, path: &str, profile: &str) -> anyhow::Result<bool> {
    Ok(conn
        .run(&has_system_command(path, profile), None)
        .await?
        .success())
}

fn has_system_command(path: &str, profile: &str) -> String {
    format!(
        "p={p}; [ \"$(readlink -f /run/current-system 2>/dev/null)\" = \"$p\" ] || \
         [ \"$(readlink -f {profile} 2>/dev/null)\" = \"$p\" ]",
        p = crate::transport::quote(path),
        profile = crate::transport::quote(profile),
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
        let c = has_system_command("/nix/store/abc-x y", "/nix/var/nix/profiles/system");
        assert!(c.starts_with("p='/nix/store/abc-x y';"));
        crate::transport::assert_valid_shell(&c);
    }

    #[test]
    fn a_refusal_for_signatures_says_what_to_configure() {
        let stderr = "error: cannot add path '/nix/store/abc-x' because it lacks a signature by a trusted key";
        assert!(refused_for_signatures(stderr));
        let inventory = crate::fleet::Inventory::from_json(
            "path:/flake",
            serde_json::json!({ "root": "/nix/store/source", "source": "nixdeploy", "value": {
                "hosts": { "h1": { "targetUser": "deploy", "toplevel": {
                    "__nixdeploy": "derivation", "drv": "/nix/store/0-h1.drv", "out": "/nix/store/0-h1" } } } } }),
        )
        .unwrap();
        let host = inventory.get("h1").unwrap();
        let text = untrusted_message(host, None);
        assert!(text.contains("does not trust deploy"), "{text}");
        assert!(
            text.contains("signingKey") && text.contains("--sign-with"),
            "{text}"
        );
        assert!(
            text.contains("trusted-public-keys") && text.contains("trusted-users"),
            "{text}"
        );
    }
}
