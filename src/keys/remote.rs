//! Uploading keys to hosts: stage every key of a host (final mode and owner set before any
//! content; content over stdin only), then rename them all into place in one command.

use std::sync::Arc;

use anyhow::{anyhow, bail};

use super::{KeySpec, Secret};
use crate::context::Context;
use crate::fleet::Host;
use crate::report::Level;
use crate::steps::{fan_out, HostResult, Outcome};
use crate::transport::quote;

/// What was uploaded to one host.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Uploaded {
    /// Destination paths, in spec order.
    pub keys: Vec<String>,
    /// Keys left owned by root until their owner exists (after activation).
    pub pending_owner: Vec<String>,
}

fn staging(spec: &KeySpec) -> String {
    format!(
        "{}/.{}.nixdeploy-new",
        spec.dest_dir.trim_end_matches('/'),
        spec.name
    )
}

/// Creates the staging file with its final mode (and owner, when it exists) before reading the
/// content from stdin. Prints `owned` or `pending-owner` first.
fn stage_command(spec: &KeySpec) -> String {
    format!(
        "set -e; d={d}; t={t}; [ -d \"$d\" ] || mkdir -p -m 0751 \"$d\"; rm -f \"$t\"; \
         install -m {mode:04o} /dev/null \"$t\"; \
         if id -u {u} >/dev/null 2>&1 && getent group {g} >/dev/null 2>&1; then chown {u}:{g} \"$t\"; echo owned; \
         else echo pending-owner; fi; cat > \"$t\"",
        d = quote(&spec.dest_dir),
        t = quote(&staging(spec)),
        mode = spec.permissions,
        u = quote(&spec.user),
        g = quote(&spec.group),
    )
}

/// Renames every staged key into place (each rename is atomic).
fn swap_command(specs: &[&KeySpec]) -> String {
    let moves: Vec<String> = specs
        .iter()
        .map(|s| format!("mv -f {} {}", quote(&staging(s)), quote(&s.dest())))
        .collect();
    format!("set -e; {}", moves.join("; "))
}

fn chown_command(dest: &str, user: &str, group: &str) -> String {
    format!(
        "if id -u {u} >/dev/null 2>&1 && getent group {g} >/dev/null 2>&1; then chown {u}:{g} {p}; echo owned; else echo missing; fi",
        u = quote(user),
        g = quote(group),
        p = quote(dest)
    )
}

/// The keys destined for one host, contents already read.
pub type HostKeys = Arc<Vec<(KeySpec, Secret)>>;

/// Uploads each host's keys. Contents were read before any host is contacted.
pub async fn upload(
    ctx: &Arc<Context>,
    items: Vec<(Arc<Host>, HostKeys)>,
) -> Vec<HostResult<Uploaded>> {
    let hosts: Vec<Arc<Host>> = items.iter().map(|(h, _)| h.clone()).collect();
    let by_host: Arc<std::collections::HashMap<String, HostKeys>> = Arc::new(
        items
            .into_iter()
            .map(|(h, k)| (h.name.to_string(), k))
            .collect(),
    );
    let c = ctx.clone();
    fan_out(ctx, &hosts, "upload_key", move |host| {
        let (ctx, by_host) = (c.clone(), by_host.clone());
        async move {
            let keys = by_host.get(host.name.as_str()).cloned().unwrap_or_default();
            upload_one(&ctx, &host, &keys).await
        }
    })
    .await
}

async fn upload_one(
    ctx: &Context,
    host: &Host,
    keys: &[(KeySpec, Secret)],
) -> anyhow::Result<Outcome<Uploaded>> {
    let mut done = Uploaded {
        keys: keys.iter().map(|(s, _)| s.dest()).collect(),
        pending_owner: Vec::new(),
    };
    if ctx.options.dry_run {
        return Ok(Outcome::planned(
            done.clone(),
            format!("would upload {}", done.keys.join(", ")),
        ));
    }
    crate::activation::lock(ctx, host).await?;
    let conn = ctx.pool.get(&ctx.target(host)).await?;
    for (spec, secret) in keys {
        let out = conn.run(&stage_command(spec), Some(&secret.0)).await?;
        if !out.success() {
            bail!(
                "staging key {} on {} failed: {}",
                spec.dest(),
                host.name,
                out.last_error_line()
            );
        }
        if out.stdout.starts_with("pending-owner") {
            done.pending_owner.push(spec.dest());
            ctx.pending_owners
                .lock()
                .unwrap()
                .entry(host.name.clone())
                .or_default()
                .push((spec.dest(), spec.user.clone(), spec.group.clone()));
        }
    }
    let specs: Vec<&KeySpec> = keys.iter().map(|(s, _)| s).collect();
    let out = conn.run(&swap_command(&specs), None).await?;
    if !out.success() {
        bail!(
            "putting keys in place on {} failed: {}",
            host.name,
            out.last_error_line()
        );
    }
    if done.pending_owner.is_empty() {
        Ok(Outcome::done(done))
    } else {
        let msg = format!(
            "{} owned by root until activation creates their owner",
            done.pending_owner.join(", ")
        );
        ctx.reporter
            .message(Level::Warn, format!("{}: {msg}", host.name));
        Ok(Outcome::done(done.clone()).with_message(msg))
    }
}

/// After activation: gives keys uploaded before their owner existed to that owner; an owner
/// still missing is an error.
pub async fn fix_owners(ctx: &Context, host: &Host) -> anyhow::Result<()> {
    let pending = ctx
        .pending_owners
        .lock()
        .unwrap()
        .remove(&host.name)
        .unwrap_or_default();
    if pending.is_empty() {
        return Ok(());
    }
    let conn = ctx.pool.get(&ctx.target(host)).await?;
    let mut missing = Vec::new();
    for (dest, user, group) in pending {
        let out = conn.run(&chown_command(&dest, &user, &group), None).await?;
        if !out.stdout.starts_with("owned") {
            missing.push(format!("{dest} ({user}:{group})"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "after activation the owners of {} still do not exist on {}",
            missing.join(", "),
            host.name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> KeySpec {
        KeySpec::parse(
            &serde_json::json!({ "name": name, "text": "x", "permissions": "0640", "user": "app" }),
            None,
        )
        .unwrap()
    }

    #[test]
    fn staging_sets_mode_before_content() {
        let cmd = stage_command(&spec("app.key"));
        let install = cmd.find("install -m 0640 /dev/null").unwrap();
        let cat = cmd.find("cat >").unwrap();
        assert!(install < cat);
        assert!(cmd.contains("/run/keys/.app.key.nixdeploy-new"));
    }

    #[test]
    fn all_keys_are_swapped_in_one_command() {
        let (a, b) = (spec("a"), spec("b"));
        let cmd = swap_command(&[&a, &b]);
        assert_eq!(cmd.matches("mv -f").count(), 2);
    }

    #[test]
    fn commands_are_valid_shell() {
        for script in [
            stage_command(&spec("k")),
            swap_command(&[&spec("k")]),
            chown_command("/run/keys/k", "app", "app"),
        ] {
            crate::transport::assert_valid_shell(&script);
        }
    }
}
