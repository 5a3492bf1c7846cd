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
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Let the target fetch paths from its own binary caches; `None` follows the host's
    /// `substituteOnDestination`, and yes when that is unset.
    pub substitute: Option<bool>,
    /// How closures travel: straight to each host, once through the binary cache, or through
    /// an escalated `nix-store --import`.
    pub via: Via,
}

/// How `copy` moves closures (`via` option).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Via {
    /// `nix copy` to each host over its own connection (`"direct"`, or `"nix-copy"`).
    #[default]
    Direct,
    /// Push once to the inventory's `cache`; each host substitutes from it (`"cache"`).
    Cache,
    /// The missing paths through `nix-store --import` run as root on the host (escalated), for
    /// a login its Nix does not trust or a host without a Nix daemon (`"import"`; see
    /// `import.rs`).
    Import,
}

impl Via {
    /// `"direct"` (or `"nix-copy"`), `"cache"` or `"import"`.
    pub fn parse(text: &str) -> Result<Via, String> {
        match text {
            "direct" | "nix-copy" => Ok(Via::Direct),
            "cache" => Ok(Via::Cache),
            "import" => Ok(Via::Import),
            other => Err(format!(
                "option `via` must be \"direct\", \"cache\" or \"import\", found \"{other}\""
            )),
        }
    }
}

/// What was (or would be) copied to one host.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Copied {
    /// The system path.
    pub path: String,
    /// The store paths the host lacked.
    pub paths: Vec<String>,
    /// The binary cache the host fetched (or would fetch) from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Why the host was copied to directly although `via: "cache"` was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// Copies `path` of each `(host, path)` pair to its host.
pub async fn copy(
    ctx: &Arc<Context>,
    items: Vec<(Arc<Host>, String)>,
    opts: CopyOptions,
) -> anyhow::Result<Vec<HostResult<Copied>>> {
    if opts.via == Via::Cache {
        return super::cache::copy_via_cache(ctx, items, opts).await;
    }
    let c = ctx.clone();
    Ok(fan_out_paths(ctx, items, "copy", move |host, path| {
        let ctx = c.clone();
        let opts = opts.clone();
        async move { copy_one(&ctx, &host, &path, &opts).await }
    })
    .await)
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
    let missing = if ctx.options.dry_run && opts.via == Via::Import {
        super::import::missing(&conn, path).await?
    } else if ctx.options.dry_run {
        let mut all = Vec::new();
        for (p, _) in &wanted {
            all.extend(missing_paths(&conn, p).await?);
        }
        all
    } else {
        look_and_absent(ctx, host, &conn, path, &wanted).await?
    };
    let copied = Copied {
        path: path.to_string(),
        paths: missing.clone(),
        ..Copied::default()
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
        let out = conn.run_root(&realise_command(p), None).await?;
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
    if opts.via == Via::Import {
        // Each closure comes in dependency order; keeping the first time a path appears keeps
        // the concatenation in dependency order too.
        let mut needed: Vec<String> = Vec::new();
        for p in &here {
            for m in super::import::missing(&conn, p).await? {
                if !needed.contains(&m) {
                    needed.push(m);
                }
            }
        }
        let sent = super::import::import(&conn, &needed).await?;
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
    send_direct(ctx, host, &conn, path, &here, substitute).await
}

/// `nix copy` of `paths` (for the system `path`) to the host over its open connection, signed
/// first when the host or `--sign-with` names a key; what Nix really sent.
pub(super) async fn send_direct(
    ctx: &Context,
    host: &Host,
    conn: &Connection,
    path: &str,
    paths: &[String],
    substitute: bool,
) -> anyhow::Result<Outcome<Copied>> {
    let target = conn.target();
    let copied = Copied {
        path: path.to_string(),
        ..Copied::default()
    };
    let signing_key = signing_key(ctx, host);
    if let Some(key) = &signing_key {
        for p in paths {
            sign(ctx, key, p).await?;
        }
    }
    let argv = ctx
        .nix
        .copy_to(&StoreUri::of(target), paths, substitute, false);
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
    let out = run_local(&ctx.nix.sign(key, &[path.to_string()]), &[], &|_, _| {}).await?;
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
/// its closure is on the host.
pub(super) async fn has_system(
    conn: &Connection,
    path: &str,
    profile: &str,
) -> anyhow::Result<bool> {
    Ok(absent(conn, &[(path.to_string(), profile.to_string())])
        .await?
        .is_empty())
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
    out.lines_or(|| format!("cannot read the profiles of {}", conn.target().host))
}

/// Separates the look at the system from the other profiles' answers.
const LOOKED: &str = "@@nixdeploy-looked";

/// [`absent`], with the system's part read as activation reads it (see
/// [`crate::activation::Looks`]): one command tells both what to send and what the host runs.
async fn look_and_absent(
    ctx: &Context,
    host: &Host,
    conn: &Arc<Connection>,
    path: &str,
    wanted: &[(String, String)],
) -> anyhow::Result<Vec<String>> {
    let Some(((system, profile), others)) = wanted.split_first() else {
        return Ok(Vec::new());
    };
    if !host.has_system || system != path || *profile != host.profile {
        return absent(conn, wanted).await;
    }
    let mut command = format!(
        "{}; echo {LOOKED}",
        crate::activation::script::probe(profile)
    );
    if !others.is_empty() {
        command = format!("{command}; {}", absent_command(others));
    }
    let out = conn.run(&command, None).await?;
    let lines = out.lines_or(|| format!("cannot read the profiles of {}", host.name))?;
    let Some(split) = lines.iter().position(|l| l == LOOKED) else {
        bail!("cannot read the profiles of {}: no answer", host.name);
    };
    // The probe's lines, empty ones included (a host with no system prints an empty line).
    let now = crate::activation::Current::from_probe(out.stdout.lines());
    let mut missing = Vec::new();
    if now.system() != Some(path) && now.profile() != Some(path) {
        missing.push(path.to_string());
    }
    missing.extend(lines[split + 1..].iter().cloned());
    ctx.looks.remember(&host.name, conn, now);
    Ok(missing)
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
    out.lines_or(|| format!("cannot query the store of {}", conn.target().host))
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
