//! The core primitives as Rust: each fans out over hosts with a concurrency limit and returns one
//! outcome per host; a failure on one host never stops the others.

mod build;
mod cache;
mod copy;
pub mod diff;
mod exec;
mod import;
mod pipeline;
mod profiles;
mod reboot;
mod specialisation;

pub use build::{build, BuildOptions, Built};
pub use cache::check_caches;
pub use copy::{check_signing_keys, copy, missing_paths, Copied, CopyOptions, Via};
pub use exec::{exec, ExecOptions, Executed};
pub use pipeline::{deploy, Activation, Pipeline};
pub use profiles::{
    activate_profiles, PickProfiles, ProfileActivated, ProfileOptions, ProfileState,
};
pub use reboot::{reboot, Rebooted};
pub use specialisation::specialisation;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::context::{Context, Interrupt};
use crate::fleet::Host;
use crate::report::{Event, FinalState, StepState};

/// What a step did on one host.
#[derive(Debug, Clone)]
pub struct Outcome<T> {
    /// Step-specific result.
    pub value: T,
    /// `Succeeded`, `Skipped` (nothing to do) or `Planned` (dry run).
    pub state: StepState,
    /// A short note for the operator (`already present`, `would copy 3 paths`).
    pub message: Option<String>,
}

impl<T> Outcome<T> {
    /// The step did its work.
    pub fn done(value: T) -> Self {
        Outcome {
            value,
            state: StepState::Succeeded,
            message: None,
        }
    }

    /// Nothing needed doing.
    pub fn skipped(value: T, why: impl Into<String>) -> Self {
        Outcome {
            value,
            state: StepState::Skipped,
            message: Some(why.into()),
        }
    }

    /// Dry run: what would have been done.
    pub fn planned(value: T, what: impl Into<String>) -> Self {
        Outcome {
            value,
            state: StepState::Planned,
            message: Some(what.into()),
        }
    }

    /// Adds a note.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

/// One host's result of a step: the outcome, or the error text shown to the operator.
pub type HostResult<T> = (Arc<Host>, Result<Outcome<T>, String>);

/// Resolves once the run is being aborted (second Ctrl-C).
pub async fn aborted(interrupt: &Interrupt) {
    while !interrupt.aborting() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Steps that bring hosts back to a safe state: the first Ctrl-C must not hold them back, or the
/// end-of-run settle could not roll armed hosts back and they would wait out their timeout.
const UNDO_STEPS: [&str; 1] = ["rollback"];

/// Runs `work` for every host, at most `ctx.options.parallel` at once, reporting each host's step
/// as it starts and ends. Results come back in the order of `hosts`.
pub async fn fan_out<T, F, Fut>(
    ctx: &Arc<Context>,
    hosts: &[Arc<Host>],
    step: &str,
    work: F,
) -> Vec<HostResult<T>>
where
    T: Send + 'static,
    F: Fn(Arc<Host>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Outcome<T>>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(ctx.options.parallel.max(1)));
    let work = Arc::new(work);
    let mut tasks = Vec::with_capacity(hosts.len());
    for host in hosts {
        let (ctx, limit, work, host, step) = (
            ctx.clone(),
            limit.clone(),
            work.clone(),
            host.clone(),
            step.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = limit
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            if ctx.interrupt.stopping() && !UNDO_STEPS.contains(&step.as_str()) {
                return Err("not started: the run was interrupted".to_string());
            }
            run_one(&ctx, &host, &step, work(host.clone())).await
        }));
    }
    let mut results = Vec::with_capacity(hosts.len());
    for (host, task) in hosts.iter().zip(tasks) {
        let result = task
            .await
            .unwrap_or_else(|e| Err(format!("internal error: {e}")));
        results.push((host.clone(), result));
    }
    results
}

/// [`fan_out`] over `(host, system path)` pairs: `work` receives each host with its own path.
pub async fn fan_out_paths<T, F, Fut>(
    ctx: &Arc<Context>,
    items: Vec<(Arc<Host>, String)>,
    step: &str,
    work: F,
) -> Vec<HostResult<T>>
where
    T: Send + 'static,
    F: Fn(Arc<Host>, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Outcome<T>>> + Send + 'static,
{
    let hosts: Vec<Arc<Host>> = items.iter().map(|(h, _)| h.clone()).collect();
    let paths: std::collections::HashMap<String, String> = items
        .into_iter()
        .map(|(h, p)| (h.name.to_string(), p))
        .collect();
    fan_out(ctx, &hosts, step, move |host| {
        let path = paths.get(host.name.as_str()).cloned().unwrap_or_default();
        work(host, path)
    })
    .await
}

/// Runs one host's step, reporting its start and end.
pub async fn run_one<T>(
    ctx: &Context,
    host: &Host,
    step: &str,
    fut: impl Future<Output = anyhow::Result<Outcome<T>>>,
) -> Result<Outcome<T>, String> {
    let start = Instant::now();
    ctx.reporter.emit(Event::Step {
        host: host.name.clone(),
        step: step.to_string(),
        state: StepState::Started,
        message: None,
        duration_ms: None,
    });
    // A host whose toplevel failed to evaluate has failed: no step works on it.
    let result = match host.not_evaluated() {
        Some(why) => Err(why),
        None => tokio::select! {
            r = fut => r.map_err(|e| format!("{e:#}")),
            // Steps that clean up after themselves on abort (exec stops its remote command) get a
            // moment to do so before they are dropped.
            _ = async { aborted(&ctx.interrupt).await; tokio::time::sleep(Duration::from_secs(3)).await } => {
                Err("aborted by a second interrupt".to_string())
            }
        },
    };
    let (state, message) = match &result {
        Ok(o) => (o.state, o.message.clone()),
        Err(e) => (StepState::Failed, Some(e.clone())),
    };
    if result.is_err() && ctx.reporter.recorder().state(&host.name) != FinalState::RolledBack {
        // The step could not do its work on this host (unreachable, copy or build failed):
        // the host has failed, whatever the runbook does next.
        ctx.reporter.emit(Event::HostState {
            host: host.name.clone(),
            state: FinalState::Failed,
            path: None,
        });
    }
    ctx.reporter.emit(Event::Step {
        host: host.name.clone(),
        step: step.to_string(),
        state,
        message,
        duration_ms: Some(start.elapsed().as_millis() as u64),
    });
    result
}
