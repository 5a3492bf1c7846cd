//! Writing the journal: a record for each host as soon as it finishes (so a run killed outright
//! still leaves one), then at the end of the run one complete record per host the run knew,
//! built from the recorder and one read-only probe of each host that the run reached.

use std::sync::Arc;
use std::time::Duration;

use crate::context::Context;
use crate::fleet::{Host, HostName};
use crate::journal::{Journal, Record, RunMeta, State};
use crate::report::{Event, FinalState, HostRecord, Sink};
use crate::transport::quote;

/// How long the end-of-run probe of one host may take; a host that does not answer in time
/// is journalled without its paths rather than holding up the run.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a host showed when the run ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Probed {
    /// The probe answered (so `current: None` means the host runs no system).
    reached: bool,
    /// `/run/current-system` now.
    current: Option<String>,
    /// What the first activation of this run replaced (the watchdog's `prev_system`): `None`
    /// when nothing activated, `Some(None)` when the host ran no system before.
    replaced: Option<Option<String>>,
    /// The generation the system profile points to now.
    generation: Option<u64>,
}

/// The run-wide facts of the records of a run starting now; the same value stamps the records
/// written as hosts finish and the final ones, so readers can tell which supersede which.
pub fn run_meta(runbook: &str, selector: Option<&str>, flake: &str) -> Arc<RunMeta> {
    Arc::new(RunMeta::current(runbook, selector, flake))
}

/// Appends a record the moment a host reaches a final state (deployed, unchanged, rolled back,
/// failed), without probing it. The run's final record for that host supersedes it; if the
/// run is killed, it is what remains. A failed append is silently left to the final write.
pub struct JournalSink {
    meta: Arc<RunMeta>,
    journal: Journal,
    started: std::time::Instant,
}

impl JournalSink {
    /// Appends to the default journal with `meta`'s run id.
    pub fn new(meta: Arc<RunMeta>) -> JournalSink {
        JournalSink {
            meta,
            journal: Journal::default_location(),
            started: std::time::Instant::now(),
        }
    }
}

impl Sink for JournalSink {
    fn emit(&self, event: &Event) {
        let Event::HostState { host, state, path } = event else {
            return;
        };
        if matches!(state, FinalState::Untouched | FinalState::Planned) {
            return;
        }
        let mut record = self.meta.record(host.clone(), state_of(*state));
        record.path_after = path.clone();
        record.duration_ms = self.started.elapsed().as_millis() as u64;
        record.progress = true;
        let _ = self.journal.append(&[record]);
    }
}

/// Appends one record per host of the run; a journal that cannot be written is a warning,
/// never a reason to change the run's outcome.
pub fn journal_run(ctx: &Arc<Context>, elapsed: Duration, meta: &RunMeta) {
    let records = records(ctx, elapsed, meta);
    if let Err(err) = Journal::default_location().append(&records) {
        ctx.reporter.message(
            crate::report::Level::Warn,
            format!("failed to write the journal: {err:#}"),
        );
    }
}

fn records(ctx: &Arc<Context>, elapsed: Duration, meta: &RunMeta) -> Vec<Record> {
    let mut meta = meta.clone();
    let hosts = ctx.reporter.recorder().hosts();
    // Every touched host is probed at once.
    let probes = ctx.runtime.block_on(async {
        let mut probing = tokio::task::JoinSet::new();
        let mut probes: Vec<Probed> = hosts.iter().map(|_| Probed::default()).collect();
        for (i, (name, rec)) in hosts.iter().enumerate() {
            let Some(host) = ctx
                .inventory
                .hosts
                .get(name)
                .filter(|_| !rec.steps.is_empty())
            else {
                continue;
            };
            // A host whose toplevel never evaluated was never contacted: nothing to probe.
            let host = host.evaluated().await;
            // A host left unchanged was seen running its system moments ago: no second look.
            if let Some(seen) = unchanged_as_seen(ctx, name, rec) {
                probes[i] = seen;
            } else if host.not_evaluated().is_none() {
                let ctx = ctx.clone();
                probing.spawn(async move { (i, probe(&ctx, &host).await) });
            }
        }
        while let Some(done) = probing.join_next().await {
            if let Ok((i, probed)) = done {
                probes[i] = probed;
            }
        }
        probes
    });
    meta.flake_revision = ctx.inventory.flake_revision();
    hosts
        .into_iter()
        .zip(probes)
        .map(|((name, rec), probed)| {
            let mut record = meta.record(name, state_of(rec.state));
            fill(&mut record, &rec, &probed, elapsed);
            record
        })
        .collect()
}

/// The journal's word for a recorder state; `copied` (closure sent, nothing activated) left
/// the running system as it was.
fn state_of(state: FinalState) -> State {
    match state {
        FinalState::Untouched => State::Untouched,
        FinalState::Planned => State::Planned,
        FinalState::Unchanged | FinalState::Copied => State::Unchanged,
        FinalState::Deployed => State::Deployed,
        FinalState::RolledBack => State::RolledBack,
        FinalState::Failed => State::Failed,
    }
}

/// Fills paths, generation, duration and message from the recorder and the probe.
fn fill(record: &mut Record, rec: &HostRecord, probed: &Probed, elapsed: Duration) {
    // Only a real activation replaces the running system; otherwise it still runs what it ran.
    record.path_before = match &probed.replaced {
        Some(replaced) => replaced.clone(),
        None => probed.current.clone(),
    };
    record.path_after = match record.state {
        State::Planned => rec.path.clone().or_else(|| probed.current.clone()),
        _ if probed.reached => probed.current.clone(),
        _ => rec.path.clone(),
    };
    if matches!(
        record.state,
        State::Deployed | State::Unchanged | State::RolledBack
    ) {
        record.generation = probed.generation;
    }
    record.duration_ms = match (rec.started, rec.ended) {
        (Some(start), Some(end)) => end.duration_since(start).as_millis() as u64,
        _ if rec.steps.is_empty() => 0,
        _ => elapsed.as_millis() as u64,
    };
    record.message = rec.error.clone();
}

/// One read-only command: the running system, the profile's generation, and what the first
/// activation of this process replaced (activation dirs are `act-<pid>-<hex time>`).
fn probe_script(profile: &str, pid: u32) -> String {
    format!(
        "echo current=$(readlink -f /run/current-system 2>/dev/null); \
         echo link=$(readlink {profile} 2>/dev/null); \
         for d in $(ls -d /run/nixdeploy/act-{pid}-* 2>/dev/null | sort); do \
         if [ -e \"$d/prev_system\" ]; then echo replaced=$(cat \"$d/prev_system\"); break; fi; done; true",
        profile = quote(profile),
    )
}

fn parse_probe(stdout: &str) -> Probed {
    let mut probed = Probed {
        reached: true,
        ..Probed::default()
    };
    let store_path = |v: &str| v.starts_with("/nix/store/").then(|| v.to_string());
    for line in stdout.lines() {
        match line.trim().split_once('=') {
            Some(("current", v)) => probed.current = store_path(v),
            Some(("link", v)) => probed.generation = generation_of(v),
            Some(("replaced", v)) => probed.replaced = Some(store_path(v)),
            _ => {}
        }
    }
    probed
}

/// What the journal records of a host that ended unchanged, from what its activation saw.
fn unchanged_as_seen(ctx: &Context, name: &HostName, rec: &HostRecord) -> Option<Probed> {
    if rec.state != FinalState::Unchanged {
        return None;
    }
    let seen = ctx.found_unchanged.lock().ok()?.get(name).cloned()?;
    let (system, generation) = seen;
    Some(Probed {
        reached: true,
        current: Some(system),
        replaced: None,
        generation: generation.map(u64::from),
    })
}

/// `system-7-link` → 7.
fn generation_of(link: &str) -> Option<u64> {
    link.strip_suffix("-link")?.rsplit('-').next()?.parse().ok()
}

async fn probe(ctx: &Context, host: &Host) -> Probed {
    let run = async {
        let conn = ctx.pool.get(&ctx.target(host)).await?;
        conn.run_root(&probe_script(&host.profile, std::process::id()), None)
            .await
    };
    match tokio::time::timeout(PROBE_TIMEOUT, run).await {
        Ok(Ok(out)) if out.success() => parse_probe(&out.stdout),
        _ => Probed::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_reads_current_system_generation_and_replaced_system() {
        let out = "current=/nix/store/bbb-new\nlink=system-3-link\nreplaced=/nix/store/aaa-old\n";
        assert_eq!(
            parse_probe(out),
            Probed {
                reached: true,
                current: Some("/nix/store/bbb-new".into()),
                replaced: Some(Some("/nix/store/aaa-old".into())),
                generation: Some(3),
            }
        );
        assert_eq!(parse_probe("current=\nlink=\n").current, None);
        assert_eq!(parse_probe("replaced=\n").replaced, Some(None));
    }

    #[test]
    fn the_probe_script_quotes_the_profile() {
        let script = probe_script("/nix/var/nix/profiles/my system", 42);
        assert!(
            script.contains("'/nix/var/nix/profiles/my system'"),
            "{script}"
        );
        assert!(script.contains("/run/nixdeploy/act-42-*"), "{script}");
    }
}
