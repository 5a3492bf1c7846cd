//! `copy(.., #{ via: "cache" })`: sign and push the union of the hosts' closures to their binary
//! cache once (only what it lacks), then have each host substitute its closure from the cache;
//! a host that cannot reach the cache is copied to directly, and says so.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{bail, Context as _};

use super::copy::{has_system, missing_paths, send_direct, Copied, CopyOptions};
use super::{fan_out_paths, HostResult, Outcome};
use crate::context::Context;
use crate::exit::Failure;
use crate::fleet::{BinaryCache, Host};
use crate::nix::cache::{
    cache_lacks_argv, realise_from_cache_argv, total_nar_size, RealiseFailure,
};
use crate::nix::run_local;
use crate::report::{Event, Level};
use crate::transport::{command_line, Stream};

/// Copies each host's closure through its inventory `cache`. Errors before any host is changed
/// when a host has no cache (then no host is even contacted), the signing key cannot be read,
/// or signing or the push fails.
pub async fn copy_via_cache(
    ctx: &Arc<Context>,
    items: Vec<(Arc<Host>, String)>,
    opts: CopyOptions,
) -> anyhow::Result<Vec<HostResult<Copied>>> {
    push_to_caches(ctx, &items).await?;
    Ok(fetch_from_caches(ctx, items, opts).await)
}

/// The collective half of [`copy_via_cache`]: signs and pushes to each host's cache what some
/// host still lacks, once for all of them.
pub async fn push_to_caches(
    ctx: &Arc<Context>,
    items: &[(Arc<Host>, String)],
) -> anyhow::Result<()> {
    group_by_cache(items, &[])?;
    // Only the systems some host still lacks go to the cache: a redeploy of hosts that already
    // run their systems pushes nothing, even to an empty cache.
    let lacking = hosts_lacking(ctx, items).await;
    let groups = group_by_cache(items, &lacking)?;
    for (cache, paths) in &groups {
        prepare_cache(ctx, cache, paths).await?;
    }
    Ok(())
}

/// The per-host half of [`copy_via_cache`], once [`push_to_caches`] is done: each host
/// substitutes its closure from its cache (the `copy` step), or is copied to directly.
pub async fn fetch_from_caches(
    ctx: &Arc<Context>,
    items: Vec<(Arc<Host>, String)>,
    opts: CopyOptions,
) -> Vec<HostResult<Copied>> {
    let c = ctx.clone();
    fan_out_paths(ctx, items, "copy", move |host, path| {
        let ctx = c.clone();
        let opts = opts.clone();
        async move { fetch_one(&ctx, &host, &path, &opts).await }
    })
    .await
}

/// Errors, before any host is contacted, when one of `hosts` has no binary cache to copy through.
pub fn check_caches(hosts: &[Arc<Host>]) -> anyhow::Result<()> {
    let items: Vec<(Arc<Host>, String)> =
        hosts.iter().map(|h| (h.clone(), String::new())).collect();
    group_by_cache(&items, &[]).map(|_| ())
}

/// For each item, whether its host may lack its system (it neither runs it nor has it in its
/// profile). A host that cannot be asked counts as lacking: its own step reports why.
async fn hosts_lacking(ctx: &Arc<Context>, items: &[(Arc<Host>, String)]) -> Vec<bool> {
    let mut set = tokio::task::JoinSet::new();
    for (i, (host, path)) in items.iter().enumerate() {
        let (ctx, host, path) = (ctx.clone(), host.clone(), path.clone());
        set.spawn(async move {
            let has = match ctx.pool.get(&ctx.target(&host)).await {
                Ok(conn) => has_system(&conn, &path, &host.profile)
                    .await
                    .unwrap_or(false),
                Err(_) => false,
            };
            (i, !has)
        });
    }
    let mut lacking = vec![true; items.len()];
    while let Some(done) = set.join_next().await {
        if let Ok((i, l)) = done {
            lacking[i] = l;
        }
    }
    lacking
}

/// The hosts' caches, each with the union of the system paths it must hold: those of the items
/// marked in `lacking` (all of them when `lacking` is empty). Errors for a host without a cache.
fn group_by_cache(
    items: &[(Arc<Host>, String)],
    lacking: &[bool],
) -> anyhow::Result<Vec<(BinaryCache, BTreeSet<String>)>> {
    let mut groups: Vec<(BinaryCache, BTreeSet<String>)> = Vec::new();
    for (i, (host, path)) in items.iter().enumerate() {
        let Some(cache) = &host.cache else {
            bail!(Failure::input(format!(
                "copy via cache: host {} has no binary cache in the inventory; set \
                 nixdeploy.defaults.cache or nixdeploy.hosts.{}.cache = {{ push; url; publicKey; \
                 signingKeyFile; }} (see docs/binary-cache.md), or copy with via: \"direct\"",
                host.name, host.name
            )));
        };
        let index = match groups.iter().position(|(c, _)| c == cache) {
            Some(index) => index,
            None => {
                groups.push((cache.clone(), BTreeSet::new()));
                groups.len() - 1
            }
        };
        if lacking.get(i).copied().unwrap_or(true) {
            groups[index].1.insert(path.clone());
        }
    }
    Ok(groups)
}

/// Signs and pushes `paths` to `cache` (a dry run only says what would be pushed).
async fn prepare_cache(
    ctx: &Context,
    cache: &BinaryCache,
    paths: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let paths: Vec<String> = paths.iter().cloned().collect();
    if paths.is_empty() {
        let verb = if ctx.options.dry_run {
            "would push"
        } else {
            "pushed"
        };
        ctx.reporter.message(
            Level::Info,
            format!(
                "cache: {verb} 0 path(s), 0.0 MiB to {}: every host has its system",
                cache.push
            ),
        );
        return Ok(());
    }
    if ctx.options.dry_run {
        let lacking = cache_lacks(cache, &paths).await?;
        let size = mib(nar_bytes(ctx, &lacking).await);
        ctx.reporter.message(
            Level::Info,
            format!(
                "cache: would push {} path(s), {size} to {} ({} already there)",
                lacking.len(),
                cache.push,
                closure_of(&paths).await?.len() - lacking.len()
            ),
        );
        return Ok(());
    }
    if let Some(key) = &cache.signing_key_file {
        std::fs::metadata(key).with_context(|| {
            format!(
                "cannot read the signing key {} (signingKeyFile of the cache {}); create it with \
                 nix-store --generate-binary-cache-key, or fix the path",
                key.display(),
                cache.push
            )
        })?;
        let out = run_local(&ctx.nix.sign(key, &paths), &[], &|_, _| {}).await?;
        if !out.success() {
            bail!(
                "signing the closures with {} failed: {}",
                key.display(),
                out.error_line()
            );
        }
    }
    let reporter = ctx.reporter.clone();
    let on_line = move |_: Stream, line: &str| {
        reporter.emit(Event::Log {
            host: None,
            step: "copy".into(),
            stream: "stderr",
            line: line.to_string(),
        });
    };
    let out = run_local(&ctx.nix.push(&cache.push, &paths), &[], &on_line).await?;
    if !out.success() {
        bail!(
            "pushing to the binary cache {} failed: {} (check that this machine may write there; \
             `nixdeploy doctor` checks it)",
            cache.push,
            out.error_line()
        );
    }
    let pushed = copied_paths(&out.stderr);
    let size = mib(nar_bytes(ctx, &pushed).await);
    ctx.reporter.message(
        Level::Info,
        format!(
            "cache: pushed {} path(s), {size} to {}",
            pushed.len(),
            cache.push
        ),
    );
    Ok(())
}

/// The NAR size of `paths` in the local store; 0 when Nix cannot say (only a report figure).
async fn nar_bytes(ctx: &Context, paths: &[String]) -> u64 {
    if paths.is_empty() {
        return 0;
    }
    match run_local(&ctx.nix.sizes(paths), &[], &|_, _| {}).await {
        Ok(out) if out.success() => total_nar_size(&out.stdout),
        _ => 0,
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

/// The store paths in the closures of `paths`, from the local store.
async fn closure_of(paths: &[String]) -> anyhow::Result<Vec<String>> {
    let mut argv: Vec<String> = ["nix-store", "--query", "--requisites"]
        .map(str::to_string)
        .to_vec();
    argv.extend(paths.iter().cloned());
    let out = run_local(&argv, &[], &|_, _| {}).await?;
    if !out.success() {
        bail!(
            "cannot read the closures locally (build them first): {}",
            out.error_line()
        );
    }
    Ok(lines(&out.stdout))
}

/// The paths of the closures of `paths` that the cache lacks.
async fn cache_lacks(cache: &BinaryCache, paths: &[String]) -> anyhow::Result<Vec<String>> {
    let closure = closure_of(paths).await?;
    let out = run_local(&cache_lacks_argv(&cache.push, &closure), &[], &|_, _| {}).await?;
    if !out.success() {
        bail!(
            "cannot ask the binary cache {} what it holds: {}",
            cache.push,
            out.error_line()
        );
    }
    Ok(lines(&out.stdout))
}

/// One host: nothing when it has its system; else substitute from the cache, falling back to a
/// direct copy when the cache is out of its reach.
async fn fetch_one(
    ctx: &Context,
    host: &Host,
    path: &str,
    opts: &CopyOptions,
) -> anyhow::Result<Outcome<Copied>> {
    let cache = host.cache.as_ref().expect("checked by group_by_cache");
    let conn = ctx.pool.get(&ctx.target(host)).await?;
    let copied = Copied {
        path: path.to_string(),
        from: Some(cache.url.clone()),
        ..Copied::default()
    };
    if ctx.options.dry_run {
        let missing = missing_paths(&conn, path).await?;
        if missing.is_empty() {
            return Ok(Outcome::skipped(copied, "already present"));
        }
        let note = format!("would fetch {} path(s) from {}", missing.len(), cache.url);
        return Ok(Outcome::planned(
            Copied {
                paths: missing,
                ..copied
            },
            note,
        ));
    }
    if has_system(&conn, path, &host.profile).await? {
        return Ok(Outcome::skipped(copied, "already present"));
    }
    crate::activation::lock(ctx, host).await?;
    let argv = realise_from_cache_argv(&cache.url, &cache.public_key, path);
    let out = conn.run_root(&command_line(&argv), None).await?;
    if out.success() {
        let fetched = copied_paths(&out.stderr);
        let note = format!("fetched {} path(s) from {}", fetched.len(), cache.url);
        return Ok(Outcome::done(Copied {
            paths: fetched,
            ..copied
        })
        .with_message(note));
    }
    match RealiseFailure::parse(&out.stderr, &cache.url) {
        RealiseFailure::Unreachable(why) => {
            ctx.reporter.message(
                Level::Warn,
                format!(
                    "{}: cannot reach the binary cache {} ({why}); copying directly",
                    host.name, cache.url
                ),
            );
            let substitute = opts.substitute.or(host.substitute).unwrap_or(true);
            let direct =
                send_direct(ctx, host, &conn, path, &[path.to_string()], substitute).await?;
            let n = direct.value.paths.len();
            Ok(Outcome {
                value: Copied {
                    from: None,
                    fallback: Some(format!("cannot reach {}: {why}", cache.url)),
                    ..direct.value
                },
                message: Some(format!(
                    "cache {} unreachable; copied {n} path(s) directly",
                    cache.url
                )),
                ..direct
            })
        }
        RealiseFailure::Untrusted(line) => bail!(
            "{} refused the paths from the binary cache {}: {line}; they must be signed by the \
             key of publicKey {} (is signingKeyFile its secret key?)",
            host.name,
            cache.url,
            cache.public_key
        ),
        RealiseFailure::Other(line) => bail!(
            "{} could not fetch {path} from the binary cache {}: {line}",
            host.name,
            cache.url
        ),
    }
}

/// The store paths Nix says it copied (`copying path '/nix/store/…' …`), each once.
fn copied_paths(stderr: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix("copying path '"))
        .filter_map(|l| l.split('\'').next())
        .filter(|p| seen.insert(p.to_string()))
        .map(str::to_string)
        .collect()
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_copied_path_counts_once() {
        let log = "copying 2 paths...\n\
            copying path '/nix/store/a-x' to 'file:///c'...\n\
            copying path '/nix/store/a-x' (5936 bytes, compressed 73.4% in 2 ms) to binary cache\n\
            copying path '/nix/store/b-y' from 'http://c:8080'...\n";
        assert_eq!(copied_paths(log), ["/nix/store/a-x", "/nix/store/b-y"]);
    }
}
