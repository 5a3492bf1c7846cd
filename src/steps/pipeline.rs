//! `deploy`'s pipeline: each host is built, copied, given its keys and activated on its own, as
//! soon as its previous stage is done, instead of every stage waiting for the slowest host.
//!
//! Three parts hand hosts on through channels: the evaluation watchers (one per host, each
//! waiting for that host's toplevel), the build coordinator (one `nix build` for every host
//! ready at that moment, up to [`BUILDS_AT_ONCE`] at a time), and the tails (copy, keys before,
//! activation, keys after: one task per host, at most `--parallel` at once; with `via: "cache"`
//! the push to the cache is one collective stage before them). Every stage calls
//! the same step function as the primitive of that name, with the one host (or the batch), so
//! events and the journal read as they do for `build`, `copy`, `upload_keys` and `activate`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use super::{BuildOptions, CopyOptions, HostResult, Outcome, Via};
use crate::context::Context;
use crate::fleet::Host;
use crate::keys::HostKeys;
use crate::report::StepState;

/// How many `nix build` invocations run at once; hosts that become ready meanwhile wait and go
/// together into the next one (one Nix process per batch, not one per host).
const BUILDS_AT_ONCE: usize = 2;

/// The activation stage of one host: its system path in, its activation's outcome out.
pub type Activation<A> = Arc<
    dyn Fn(Arc<Host>, String) -> Pin<Box<dyn Future<Output = Result<Outcome<A>, String>> + Send>>
        + Send
        + Sync,
>;

/// What `deploy` does to each host.
pub struct Pipeline<A> {
    /// The build stage's options.
    pub build: BuildOptions,
    /// The copy stage's options; `via: "cache"` makes the copy one collective stage.
    pub copy: CopyOptions,
    /// Keys to upload before activation, by host name (hosts without any are left out).
    pub keys_before: BTreeMap<String, HostKeys>,
    /// Keys to upload after activation, by host name.
    pub keys_after: BTreeMap<String, HostKeys>,
    /// The activation stage.
    pub activate: Activation<A>,
}

/// A stage of a host's pipeline, named in the error of a host that failed in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Build,
    Copy,
    KeysBefore,
    Activate,
    KeysAfter,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Build => "build",
            Stage::Copy => "copy",
            Stage::KeysBefore => "upload_keys (pre-activation)",
            Stage::Activate => "activate",
            Stage::KeysAfter => "upload_keys (post-activation)",
        }
    }

    /// The error of a host that failed this stage.
    fn failed(self, why: impl std::fmt::Display) -> String {
        format!("{}: {why}", self.name())
    }
}

/// Where every host's final result goes.
type Done<A> = mpsc::UnboundedSender<HostResult<A>>;

/// A host and its system path once built.
type Built = (Arc<Host>, String);

/// Deploys each target through the pipeline. A target that comes with a path (from a report)
/// counts as built. Results come back in the order of `targets`; a host that failed a stage
/// has an error naming the stage.
pub async fn deploy<A: Send + 'static>(
    ctx: &Arc<Context>,
    targets: Vec<(Arc<Host>, Option<String>)>,
    pipeline: Pipeline<A>,
) -> Vec<HostResult<A>> {
    let order: Vec<Arc<Host>> = targets.iter().map(|(h, _)| h.clone()).collect();
    let pipeline = Arc::new(pipeline);
    let (done, mut results) = mpsc::unbounded_channel();
    let (built, built_rx) = mpsc::unbounded_channel();
    let ready = evaluations(ctx, targets);
    tokio::spawn(builds(
        ctx.clone(),
        pipeline.clone(),
        ready,
        built,
        done.clone(),
    ));
    tokio::spawn(tails(ctx.clone(), pipeline, built_rx, done));
    // Every sender is gone once each host has its result.
    let mut by_name = BTreeMap::new();
    while let Some((h, r)) = results.recv().await {
        by_name.insert(h.name.to_string(), (h, r));
    }
    order
        .into_iter()
        .map(|h| {
            by_name.remove(h.name.as_str()).unwrap_or_else(|| {
                let why = "internal error: the host left the pipeline without a result";
                (h, Err(why.to_string()))
            })
        })
        .collect()
}

/// Each target as soon as its own evaluation is over. A host that evaluated is also connected
/// to from then on, so its handshake overlaps its build instead of starting its copy.
fn evaluations(
    ctx: &Arc<Context>,
    targets: Vec<(Arc<Host>, Option<String>)>,
) -> mpsc::UnboundedReceiver<(Arc<Host>, Option<String>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (host, path) in targets {
        // Hosts whose evaluation is already over are queued at once, so they all go into the
        // first build together.
        if let Some(host) = host.evaluated_now() {
            warm(ctx, &host);
            let _ = tx.send((host, path));
            continue;
        }
        let (tx, ctx) = (tx.clone(), ctx.clone());
        tokio::spawn(async move {
            let host = host.evaluated().await;
            warm(&ctx, &host);
            let _ = tx.send((host, path));
        });
    }
    rx
}

/// Opens the connection to a host that evaluated, in the background (the pool bounds the
/// handshakes in flight); a host that failed its evaluation is never contacted.
fn warm(ctx: &Arc<Context>, host: &Arc<Host>) {
    let evaluated = matches!(host.evaluation, crate::fleet::Evaluation::Done);
    if !evaluated || ctx.interrupt.stopping() {
        return;
    }
    let (ctx, target) = (ctx.clone(), ctx.target(host));
    tokio::spawn(async move { ctx.pool.warm(&target).await });
}

/// The build coordinator: takes every host ready now, starts one build for them, and gathers
/// the hosts that become ready meanwhile for the next one.
async fn builds<A: Send + 'static>(
    ctx: Arc<Context>,
    pipeline: Arc<Pipeline<A>>,
    mut ready: mpsc::UnboundedReceiver<(Arc<Host>, Option<String>)>,
    built: mpsc::UnboundedSender<Built>,
    done: Done<A>,
) {
    let slots = Arc::new(Semaphore::new(BUILDS_AT_ONCE));
    loop {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let Some(first) = ready.recv().await else {
            break;
        };
        let mut batch = vec![first];
        while let Ok(more) = ready.try_recv() {
            batch.push(more);
        }
        let mut to_build = Vec::new();
        for (host, path) in batch {
            match path {
                Some(path) => {
                    let _ = built.send((host, path));
                }
                None => to_build.push(host),
            }
        }
        if to_build.is_empty() {
            continue;
        }
        if let Err(e) = not_stopping(&ctx, Stage::Build) {
            for host in to_build {
                let _ = done.send((host, Err(e.clone())));
            }
            continue;
        }
        let (ctx, pipeline, built, done) =
            (ctx.clone(), pipeline.clone(), built.clone(), done.clone());
        tokio::spawn(async move {
            let _slot = slot;
            for (host, r) in super::build(&ctx, &to_build, &pipeline.build).await {
                match passed(Stage::Build, r) {
                    Ok(o) => {
                        let _ = built.send((host, o.value.path));
                    }
                    Err(e) => {
                        let _ = done.send((host, Err(e)));
                    }
                }
            }
        });
    }
}

/// Starts each built host's tail; with `via: "cache"`, after one copy of every built host.
async fn tails<A: Send + 'static>(
    ctx: Arc<Context>,
    pipeline: Arc<Pipeline<A>>,
    mut built: mpsc::UnboundedReceiver<Built>,
    done: Done<A>,
) {
    let gate = Arc::new(Semaphore::new(ctx.options.parallel.max(1)));
    let start = |host: Arc<Host>, path: String| {
        let (ctx, pipeline, gate, done) =
            (ctx.clone(), pipeline.clone(), gate.clone(), done.clone());
        tokio::spawn(async move {
            let r = tail(&ctx, &pipeline, &gate, &host, path).await;
            let _ = done.send((host, r));
        });
    };
    if pipeline.copy.via != Via::Cache {
        while let Some((host, path)) = built.recv().await {
            start(host, path);
        }
        return;
    }
    // The cache is pushed to once, with the union of the closures: every build first. Then
    // each host substitutes from it and goes on at its own pace.
    let mut all = Vec::new();
    while let Some(item) = built.recv().await {
        all.push(item);
    }
    if all.is_empty() {
        return;
    }
    let pushed = match not_stopping(&ctx, Stage::Copy) {
        Ok(()) => super::cache::push_to_caches(&ctx, &all)
            .await
            .map_err(|e| Stage::Copy.failed(format!("{e:#}"))),
        Err(e) => Err(e),
    };
    match pushed {
        Err(e) => {
            for (host, _) in all {
                let _ = done.send((host, Err(e.clone())));
            }
        }
        Ok(()) => {
            for (host, path) in all {
                start(host, path);
            }
        }
    }
}

/// One host after its build: copy (with `via: "cache"`, its fetch from the cache pushed to
/// already), keys before, activation, keys after, holding one of the `--parallel` places
/// throughout.
async fn tail<A>(
    ctx: &Arc<Context>,
    pipeline: &Pipeline<A>,
    gate: &Arc<Semaphore>,
    host: &Arc<Host>,
    path: String,
) -> Result<Outcome<A>, String> {
    let _place = gate
        .clone()
        .acquire_owned()
        .await
        .expect("semaphore is never closed");
    let one = vec![(host.clone(), path.clone())];
    not_stopping(ctx, Stage::Copy)?;
    let copied = if pipeline.copy.via == Via::Cache {
        super::cache::fetch_from_caches(ctx, one, pipeline.copy.clone()).await
    } else {
        super::copy(ctx, one, pipeline.copy.clone())
            .await
            .map_err(|e| Stage::Copy.failed(format!("{e:#}")))?
    };
    only(Stage::Copy, copied)?;
    if let Some(keys) = pipeline.keys_before.get(host.name.as_str()) {
        not_stopping(ctx, Stage::KeysBefore)?;
        let uploaded = crate::keys::upload(ctx, vec![(host.clone(), keys.clone())]).await;
        only(Stage::KeysBefore, uploaded)?;
    }
    not_stopping(ctx, Stage::Activate)?;
    let activated = (pipeline.activate)(host.clone(), path)
        .await
        .map_err(|e| Stage::Activate.failed(e))?;
    if activated.state == StepState::Failed {
        return Ok(activated);
    }
    if let Some(keys) = pipeline.keys_after.get(host.name.as_str()) {
        not_stopping(ctx, Stage::KeysAfter)?;
        let uploaded = crate::keys::upload(ctx, vec![(host.clone(), keys.clone())]).await;
        only(Stage::KeysAfter, uploaded)?;
    }
    Ok(activated)
}

/// No stage starts once the run is being interrupted.
fn not_stopping(ctx: &Context, stage: Stage) -> Result<(), String> {
    if ctx.interrupt.stopping() {
        Err(stage.failed("not started: the run was interrupted"))
    } else {
        Ok(())
    }
}

/// A step's result for one host, with a failed outcome as an error naming the stage.
fn passed<T>(stage: Stage, r: Result<Outcome<T>, String>) -> Result<Outcome<T>, String> {
    match r {
        Ok(o) if o.state == StepState::Failed => {
            Err(stage.failed(o.message.unwrap_or_else(|| "failed".into())))
        }
        Ok(o) => Ok(o),
        Err(e) => Err(stage.failed(e)),
    }
}

/// The one result of a step called with one host.
fn only<T>(stage: Stage, results: Vec<HostResult<T>>) -> Result<Outcome<T>, String> {
    match results.into_iter().next() {
        Some((_, r)) => passed(stage, r),
        None => Err(stage.failed("internal error: the step returned no result")),
    }
}
