//! Activation: switch/boot/test/dry-activate through a watchdog on the target that rolls back by
//! itself unless confirmed over a brand-new connection; plain rollbacks; deploy locks.

mod lock;
pub mod script;

pub use lock::{lock, LockGuard};

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use crate::context::Context;
use crate::fleet::Host;
use crate::report::{Event, FinalState, StepState};
use crate::steps::{fan_out, fan_out_paths, HostResult, Outcome};
use crate::transport::Stream;
use script::Activation;

/// How a system is activated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Set the profile and activate now.
    Switch,
    /// Set the profile only; the new system runs after the next boot.
    Boot,
    /// Activate now without touching the profile.
    Test,
    /// Show what activation would do.
    DryActivate,
}

impl Mode {
    /// Parses `switch`, `boot`, `test` or `dry-activate`.
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "switch" => Ok(Mode::Switch),
            "boot" => Ok(Mode::Boot),
            "test" => Ok(Mode::Test),
            "dry-activate" => Ok(Mode::DryActivate),
            other => Err(format!(
                "unknown activation mode `{other}`; expected switch, boot, test or dry-activate"
            )),
        }
    }

    /// The `switch-to-configuration` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Switch => "switch",
            Mode::Boot => "boot",
            Mode::Test => "test",
            Mode::DryActivate => "dry-activate",
        }
    }

    fn runs_now(self) -> bool {
        matches!(self, Mode::Switch | Mode::Test)
    }
}

/// Who confirms an armed activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmMode {
    /// nixdeploy confirms as soon as the host answers a new connection.
    Auto,
    /// The runbook calls `confirm(hosts)` or `rollback(hosts)` itself.
    Manual,
}

/// Options of `activate`.
#[derive(Debug, Clone)]
pub struct ActivateOptions {
    /// How to activate.
    pub mode: Mode,
    /// Arm the target's watchdog (switch and test only).
    pub magic_rollback: bool,
    /// How long the target waits for confirmation.
    pub confirm_timeout: Duration,
    /// How long `switch-to-configuration` may run.
    pub activation_timeout: Duration,
    /// Who confirms.
    pub confirm: ConfirmMode,
}

impl Default for ActivateOptions {
    fn default() -> Self {
        ActivateOptions {
            mode: Mode::Switch,
            magic_rollback: true,
            confirm_timeout: Duration::from_secs(30),
            activation_timeout: Duration::from_secs(240),
            confirm: ConfirmMode::Auto,
        }
    }
}

/// An activation that waits for `confirm` or `rollback` from the runbook.
#[derive(Debug, Clone)]
pub struct Armed {
    /// The watchdog's token.
    pub token: String,
    /// The new system.
    pub path: String,
    /// The system it replaced.
    pub previous: Option<String>,
    /// When the watchdog gives up and rolls back.
    pub deadline: Instant,
}

/// What activation did on one host.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Activated {
    /// The system activated (or that would be).
    pub path: String,
    /// The system the host ran before.
    pub previous: Option<String>,
    /// The profile generation now current, when the profile was set.
    pub generation: Option<u32>,
    /// `deployed`, `unchanged`, `armed`, `rolled back`, `planned`.
    pub state: String,
}

/// The host is back on its previous system: a failure, but a safe one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RolledBack(pub String);

/// What a host runs now.
struct Current {
    system: Option<String>,
    profile: Option<String>,
    profile_link: Option<String>,
}

fn generation_of(link: &str) -> Option<u32> {
    link.strip_suffix("-link")?.rsplit('-').next()?.parse().ok()
}

fn token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("act-{}-{:x}", std::process::id(), nanos)
}

async fn current(ctx: &Context, host: &Host) -> anyhow::Result<Current> {
    let conn = ctx.pool.get(&ctx.target(host)).await?;
    let out = conn.run(&script::probe(&host.profile), None).await?;
    let mut lines = out.stdout.lines().map(|l| {
        let l = l.trim();
        (!l.is_empty()).then(|| l.to_string())
    });
    Ok(Current {
        system: lines.next().flatten(),
        profile: lines.next().flatten(),
        profile_link: lines.next().flatten(),
    })
}

/// Activates `path` on each host.
pub async fn activate(
    ctx: &Arc<Context>,
    items: Vec<(Arc<Host>, String)>,
    opts: ActivateOptions,
) -> Vec<HostResult<Activated>> {
    let c = ctx.clone();
    fan_out_paths(ctx, items, "activate", move |host, path| {
        let ctx = c.clone();
        let opts = opts.clone();
        async move {
            let result = activate_one(&ctx, &host, &path, &opts).await;
            let previous = ctx.reporter.recorder().state(&host.name);
            let state = match &result {
                Ok(o) => match o.value.state.as_str() {
                    "deployed" => Some(FinalState::Deployed),
                    "unchanged" => Some(FinalState::Unchanged),
                    "rolled back" => Some(FinalState::RolledBack),
                    "planned" => Some(FinalState::Planned),
                    _ => None,
                },
                Err(e) if e.downcast_ref::<RolledBack>().is_some() => Some(FinalState::RolledBack),
                Err(_) => Some(FinalState::Failed),
            };
            if let Some(state) = state {
                if !(state == FinalState::Unchanged && previous > FinalState::Unchanged) {
                    ctx.reporter.emit(Event::HostState {
                        host: host.name.clone(),
                        state,
                        path: Some(path.clone()),
                    });
                }
            }
            result
        }
    })
    .await
}

fn is_unchanged(mode: Mode, now: &Current, path: &str) -> bool {
    let profile_ok = now.profile.as_deref() == Some(path);
    let running = now.system.as_deref() == Some(path);
    match mode {
        Mode::Switch => running && profile_ok,
        Mode::Test => running,
        Mode::Boot => profile_ok,
        Mode::DryActivate => false,
    }
}

/// The outcome for a host that already runs the system.
async fn unchanged(
    ctx: &Context,
    host: &Host,
    mut value: Activated,
    link: Option<&str>,
) -> anyhow::Result<Outcome<Activated>> {
    value.state = "unchanged".into();
    value.generation = link.and_then(generation_of);
    // Keys uploaded before this (non-)activation still get their owner, or an error.
    if !ctx.options.dry_run {
        crate::keys::fix_owners(ctx, host).await?;
    }
    let message = format!("already runs {}", value.path);
    Ok(Outcome::skipped(value, message))
}

async fn activate_one(
    ctx: &Context,
    host: &Host,
    path: &str,
    opts: &ActivateOptions,
) -> anyhow::Result<Outcome<Activated>> {
    let mut value = Activated {
        path: path.to_string(),
        ..Default::default()
    };
    // A host this run has not locked yet (its copy was skipped) is asked first whether there is
    // anything to do: an unchanged host is never locked. Otherwise the start command itself
    // reads what the host runs, so a change costs one round trip before the confirmation.
    let locked = ctx.locks.lock().unwrap().contains_key(&host.name);
    if ctx.options.dry_run || !locked {
        let now = current(ctx, host).await?;
        value.previous = now.system.clone();
        if is_unchanged(opts.mode, &now, path) {
            return unchanged(ctx, host, value, now.profile_link.as_deref()).await;
        }
        if ctx.options.dry_run {
            value.state = "planned".into();
            return Ok(Outcome::planned(
                value,
                format!("would {} {path}", opts.mode.as_str()),
            ));
        }
        lock(ctx, host).await?;
    }
    let token = token();
    let magic = opts.magic_rollback && opts.mode.runs_now();
    let act = Activation {
        profile: &host.profile,
        path,
        mode: opts.mode,
        token: &token,
        magic,
        confirm_timeout: opts.confirm_timeout,
        activation_timeout: opts.activation_timeout,
    };
    let started = Instant::now();
    let limit = opts.activation_timeout + Duration::from_secs(15);
    let run = follow(
        ctx,
        host,
        &script::start(&act),
        Some(&script::watchdog(&act)),
        limit,
    )
    .await;
    let Some(now) = run.current else {
        // The start command never ran: nothing was launched.
        return Err(run
            .error
            .unwrap_or_else(|| anyhow!("no answer from {} to the activation", host.name)));
    };
    value.previous = now.system.clone();
    let new_link = run.new_link;
    // No verdict: the connection died during activation (a configuration that cuts the
    // network, say); the confirmation below finds out over a brand-new connection.
    let state = run.state.unwrap_or_else(|| "unknown".to_string());
    match state.as_str() {
        "unchanged" => return unchanged(ctx, host, value, now.profile_link.as_deref()).await,
        "missing" => bail!(
            "{path} is not on {} or has no bin/switch-to-configuration; copy it first",
            host.name
        ),
        s if s.starts_with("failed:setup") => bail!(
            "could not start the activation on {}: cannot write to {}",
            host.name,
            script::STATE_DIR
        ),
        _ => {}
    }
    value.generation = new_link.as_deref().and_then(generation_of);
    if state == "done" {
        return finished(ctx, host, value).await;
    }
    if let Some(why) = state.strip_prefix("rolled-back:") {
        return Err(RolledBack(format!(
            "{}; the previous system is active again",
            describe_rollback(why, opts.mode)
        ))
        .into());
    }
    if let Some(why) = state.strip_prefix("failed:") {
        bail!("activation failed ({why})");
    }
    if let Some(why) = state.strip_prefix("rollback-failed:") {
        bail!("activation failed ({why}) and so did the rollback; the host needs attention");
    }
    // Armed, or unknown because the connection was lost: confirm over a brand-new connection.
    let deadline = if state == "armed" {
        Instant::now() + opts.confirm_timeout
    } else {
        started + opts.activation_timeout + opts.confirm_timeout
    };
    if opts.confirm == ConfirmMode::Manual && state == "armed" {
        ctx.armed.lock().unwrap().insert(
            host.name.clone(),
            Armed {
                token: token.clone(),
                path: path.to_string(),
                previous: value.previous.clone(),
                deadline,
            },
        );
        value.state = "armed".into();
        let secs = opts.confirm_timeout.as_secs();
        return Ok(Outcome::done(value)
            .with_message(format!("armed: confirm within {secs}s or it rolls back")));
    }
    match confirm_until(ctx, host, &token, deadline).await {
        Ok(()) => finished(ctx, host, value).await,
        Err(e) => Err(e),
    }
}

fn describe_rollback(why: &str, mode: Mode) -> String {
    match why.strip_prefix("activation-") {
        Some("timeout") => "switch-to-configuration timed out and the host rolled back".to_string(),
        Some(code) => format!(
            "switch-to-configuration {} failed ({}) and the host rolled back",
            mode.as_str(),
            code.replace("exit-", "exit status ")
        ),
        None if why == "no-confirmation" => {
            "no confirmation reached the host in time; it rolled itself back".to_string()
        }
        None => format!("rolled back ({why})"),
    }
}

async fn finished(
    ctx: &Context,
    host: &Host,
    mut value: Activated,
) -> anyhow::Result<Outcome<Activated>> {
    if value.generation.is_none() {
        if let Ok(now) = current(ctx, host).await {
            value.generation = now.profile_link.as_deref().and_then(generation_of);
        }
    }
    value.state = "deployed".into();
    // Keys uploaded before their owner existed get their owner now that the new system runs.
    crate::keys::fix_owners(ctx, host).await?;
    Ok(Outcome::done(value))
}

/// What a start command reported.
#[derive(Default)]
struct Followed {
    /// What the host ran before, when the command got that far.
    current: Option<Current>,
    /// The watchdog's verdict, when it came before the connection ended.
    state: Option<String>,
    /// The generation link the activation created.
    new_link: Option<String>,
    /// Why the command ended without a verdict.
    error: Option<anyhow::Error>,
}

/// Runs a start command, streaming the activation log as events, until the watchdog has a
/// verdict.
async fn follow(
    ctx: &Context,
    host: &Host,
    command: &str,
    stdin: Option<&str>,
    limit: Duration,
) -> Followed {
    let conn = match ctx.pool.get(&ctx.target(host)).await {
        Ok(c) => c,
        Err(e) => {
            return Followed {
                error: Some(e),
                ..Default::default()
            }
        }
    };
    let reporter = ctx.reporter.clone();
    let name = host.name.clone();
    let on_line = move |_: Stream, line: &str| {
        if !line.starts_with("@@nixdeploy-") && !line.is_empty() {
            reporter.emit(Event::Log {
                host: Some(name.clone()),
                step: "activate".into(),
                stream: "stdout",
                line: line.to_string(),
            });
        }
    };
    let out = tokio::time::timeout(
        limit,
        conn.run_streaming(command, stdin.map(str::as_bytes), &on_line),
    )
    .await
    .map_err(|_| anyhow!("activation on {} did not finish in time", host.name))
    .and_then(|r| r);
    let (stdout, error) = match out {
        Ok(o) => (o.stdout, None),
        Err(e) => (String::new(), Some(e)),
    };
    parse_followed(&stdout, error)
}

fn parse_followed(stdout: &str, error: Option<anyhow::Error>) -> Followed {
    let field = |tag: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .map(|v| v.trim().to_string())
    };
    // Tags without their separating space: an empty value may lose its trailing blank.
    let some = |v: Option<String>| v.filter(|v| !v.is_empty());
    let current = field("@@nixdeploy-current").map(|system| Current {
        system: some(Some(system)),
        profile: some(field("@@nixdeploy-profile")),
        profile_link: some(field("@@nixdeploy-link")),
    });
    let state = stdout
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("@@nixdeploy-state "))
        .map(|s| s.trim().to_string())
        .find(|s| s != "activating" && s != "rolling-back");
    Followed {
        current,
        state,
        new_link: some(field("@@nixdeploy-new-link")),
        error,
    }
}

/// Confirms over brand-new connections until the target acknowledges or `deadline` passes; then
/// finds out (once the host answers again) whether it rolled back.
async fn confirm_until(
    ctx: &Context,
    host: &Host,
    token: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    let target = ctx.target(host);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let attempt = left.min(Duration::from_secs(5)).max(Duration::from_secs(1));
        if let Ok(out) = target
            .run_fresh(&script::confirm(token), attempt + Duration::from_secs(12))
            .await
        {
            let state = out.stdout.trim().to_string();
            match state.as_str() {
                "confirmed" => return Ok(()),
                s if s.starts_with("rolled-back:") => {
                    let why = describe_rollback(&s["rolled-back:".len()..], Mode::Switch);
                    return Err(
                        RolledBack(format!("{why}; the previous system is active again")).into(),
                    );
                }
                "activating" | "armed" | "" => {}
                other if out.status == Some(0) => {
                    bail!("unexpected activation state on {}: {other}", host.name)
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The window has passed: the watchdog rolls back. Wait for the host to come back and say so.
    let grace = Instant::now() + Duration::from_secs(60);
    while Instant::now() < grace {
        if let Ok(out) = target
            .run_fresh(&script::read_state(token), Duration::from_secs(8))
            .await
        {
            let state = out.stdout.trim().to_string();
            if state.starts_with("rolled-back:") {
                let _ = ctx.pool.reconnect(&target).await;
                let why = format!("no confirmation reached {} in time; it rolled itself back to its previous system", host.name);
                return Err(RolledBack(why).into());
            }
            if state == "confirmed" {
                let _ = ctx.pool.reconnect(&target).await;
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("{} stopped answering after activation; its watchdog rolls it back once the confirm timeout passes", host.name)
}

/// Confirms the armed activations of `hosts` (manual confirmation).
pub async fn confirm(ctx: &Arc<Context>, hosts: &[Arc<Host>]) -> Vec<HostResult<Activated>> {
    let c = ctx.clone();
    fan_out(ctx, hosts, "confirm", move |host| {
        let ctx = c.clone();
        async move {
            let armed = ctx.armed.lock().unwrap().get(&host.name).cloned();
            let Some(armed) = armed else {
                bail!("{} has no activation waiting for confirmation", host.name);
            };
            if ctx.options.dry_run {
                return Ok(Outcome::planned(
                    Activated {
                        path: armed.path,
                        state: "planned".into(),
                        ..Default::default()
                    },
                    "would confirm",
                ));
            }
            let result = confirm_until(&ctx, &host, &armed.token, armed.deadline).await;
            ctx.armed.lock().unwrap().remove(&host.name);
            let value = Activated {
                path: armed.path.clone(),
                previous: armed.previous.clone(),
                ..Default::default()
            };
            match result {
                Ok(()) => {
                    ctx.reporter.emit(Event::HostState {
                        host: host.name.clone(),
                        state: FinalState::Deployed,
                        path: Some(armed.path),
                    });
                    finished(&ctx, &host, value).await
                }
                Err(e) => {
                    ctx.reporter.emit(Event::HostState {
                        host: host.name.clone(),
                        state: FinalState::RolledBack,
                        path: armed.previous,
                    });
                    Err(e)
                }
            }
        }
    })
    .await
}

/// Rolls `hosts` back: an armed activation is undone at once; otherwise the profile moves to its
/// previous generation and that is activated.
pub async fn rollback(ctx: &Arc<Context>, hosts: &[Arc<Host>]) -> Vec<HostResult<Activated>> {
    let c = ctx.clone();
    fan_out(ctx, hosts, "rollback", move |host| {
        let ctx = c.clone();
        async move {
            let result = rollback_one(&ctx, &host).await;
            if let Ok(o) = &result {
                if o.state == StepState::Succeeded {
                    ctx.reporter.emit(Event::HostState {
                        host: host.name.clone(),
                        state: FinalState::RolledBack,
                        path: Some(o.value.path.clone()),
                    });
                }
            }
            result
        }
    })
    .await
}

async fn rollback_one(ctx: &Context, host: &Host) -> anyhow::Result<Outcome<Activated>> {
    let armed = ctx.armed.lock().unwrap().get(&host.name).cloned();
    if ctx.options.dry_run {
        return Ok(Outcome::planned(
            Activated {
                state: "planned".into(),
                ..Default::default()
            },
            "would roll back",
        ));
    }
    let target = ctx.target(host);
    if let Some(armed) = armed {
        let out = target
            .run_fresh(
                &script::request_rollback(&armed.token),
                Duration::from_secs(75),
            )
            .await?;
        ctx.armed.lock().unwrap().remove(&host.name);
        let state = out.stdout.trim();
        if !state.starts_with("rolled-back") {
            bail!("rollback on {} ended in state `{state}`", host.name);
        }
        let path = armed.previous.clone().unwrap_or_default();
        return Ok(Outcome::done(Activated {
            path,
            previous: Some(armed.path),
            state: "rolled back".into(),
            generation: None,
        }));
    }
    lock(ctx, host).await?;
    let conn = ctx.pool.get(&target).await?;
    let before = current(ctx, host).await?;
    let out = conn
        .run(&script::plain_rollback(&host.profile), None)
        .await?;
    let last = out.stdout.lines().last().unwrap_or("").trim().to_string();
    if last == "no-previous" {
        bail!(
            "{} has no generation before the current one to roll back to",
            host.name
        );
    }
    let Some(path) = last.strip_prefix("rolled-back ") else {
        bail!(
            "rollback on {} failed: {}",
            host.name,
            out.last_error_line()
        );
    };
    let after = current(ctx, host).await?;
    Ok(Outcome::done(Activated {
        path: path.to_string(),
        previous: before.system,
        generation: after.profile_link.as_deref().and_then(generation_of),
        state: "rolled back".into(),
    }))
}

/// Ends the run's activations: armed ones the runbook never confirmed are rolled back.
pub async fn settle(ctx: &Arc<Context>) {
    let pending: Vec<Arc<Host>> = {
        let armed = ctx.armed.lock().unwrap();
        ctx.inventory
            .hosts
            .values()
            .filter(|h| armed.contains_key(&h.name))
            .cloned()
            .collect()
    };
    if !pending.is_empty() {
        let names: Vec<String> = pending.iter().map(|h| h.name.to_string()).collect();
        ctx.reporter.message(
            crate::report::Level::Warn,
            format!(
                "the runbook never confirmed {}; rolling back",
                names.join(", ")
            ),
        );
        rollback(ctx, &pending).await;
    }
    ctx.locks.lock().unwrap().clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_come_from_profile_links() {
        assert_eq!(generation_of("system-12-link"), Some(12));
        assert_eq!(generation_of("system"), None);
    }

    #[test]
    fn modes_parse_and_reject_unknown() {
        assert_eq!(Mode::parse("dry-activate"), Ok(Mode::DryActivate));
        assert!(Mode::parse("reboot")
            .unwrap_err()
            .contains("switch, boot, test or dry-activate"));
    }
}
