//! Activation: switch/boot/test/dry-activate through a watchdog on the target that rolls back by
//! itself unless confirmed over a brand-new connection; plain rollbacks; deploy locks.

mod drive;
mod lock;
mod look;
mod options;
pub mod protocol;
pub mod script;

pub use drive::{Ending, Ongoing};
pub use lock::{lock, release as release_lock, LockGuard};
pub use look::Looks;
pub use options::{ActivateOptions, ConfirmMode, Mode, OnRefusal};

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use crate::context::Context;
use crate::fleet::Host;
use crate::report::{Event, FinalState, StepState};
use crate::steps::{fan_out, fan_out_paths, HostResult, Outcome};
use protocol::WatchdogState;
use script::Activation;

/// An activation that waits for `confirm` or `rollback` from the runbook.
#[derive(Debug, Clone)]
pub struct Armed {
    /// Everything needed to drive it to its end.
    pub ongoing: Ongoing,
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
    /// `deployed`, `unchanged`, `armed`, `staged`, `rolled back`, `planned`.
    pub state: String,
}

/// The host is back on its previous system: a failure, but a safe one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RolledBack(pub String);

/// What a host runs now.
#[derive(Debug, Clone, Default)]
pub struct Current {
    system: Option<String>,
    profile: Option<String>,
    profile_link: Option<String>,
    boot_id: Option<String>,
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

impl Current {
    /// Reads the three lines of [`script::probe`]: the running system, the profile's target,
    /// its generation link (each empty when there is none).
    pub fn from_probe<'a>(mut lines: impl Iterator<Item = &'a str>) -> Current {
        let mut next = || {
            lines
                .next()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
        };
        Current {
            system: next(),
            profile: next(),
            profile_link: next(),
            boot_id: None,
        }
    }

    /// The running system.
    pub fn system(&self) -> Option<&str> {
        self.system.as_deref()
    }

    /// The system the profile points at.
    pub fn profile(&self) -> Option<&str> {
        self.profile.as_deref()
    }
}

/// What the host runs: the look `copy` just took when it still holds (see [`Looks`]),
/// otherwise one probe.
async fn current(ctx: &Context, host: &Host) -> anyhow::Result<Current> {
    let conn = ctx.pool.get(&ctx.target(host)).await?;
    if let Some(now) = ctx.looks.take(&host.name, &conn) {
        return Ok(now);
    }
    let out = conn.run_root(&script::probe(&host.profile), None).await?;
    Ok(Current::from_probe(out.stdout.lines()))
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
                    "deployed" | "staged" => Some(FinalState::Deployed),
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
        ctx.found_unchanged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.name.clone(), (value.path.clone(), value.generation));
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
    let locked = lock::holds(ctx, host)?;
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
    let Launched {
        mut on,
        state,
        now,
        new_link,
    } = launch(ctx, host, path, opts).await?;
    value.previous = now.system.clone();
    value.generation = new_link.as_deref().and_then(generation_of);
    let confirm_here = opts.confirm == ConfirmMode::Auto;
    match drive::drive(ctx, host, &mut on, state, confirm_here).await? {
        Ending::Unchanged => unchanged(ctx, host, value, now.profile_link.as_deref()).await,
        Ending::Deployed => finished(ctx, host, value).await,
        Ending::Staged => {
            value.state = "staged".into();
            let message = format!(
                "a live switch was refused; {path} is the boot default and runs after the next reboot"
            );
            ctx.reporter.message(
                crate::report::Level::Warn,
                format!("{}: {message}", host.name),
            );
            Ok(Outcome::done(value).with_message(message))
        }
        Ending::Armed => {
            ctx.armed
                .lock()
                .unwrap()
                .insert(host.name.clone(), Armed { ongoing: on });
            value.state = "armed".into();
            let secs = opts.confirm_timeout.as_secs();
            Ok(Outcome::done(value)
                .with_message(format!("armed: confirm within {secs}s or it rolls back")))
        }
    }
}

/// What starting an activation gave: the activation to drive and the state to drive it from.
struct Launched {
    on: Ongoing,
    state: WatchdogState,
    now: Current,
    new_link: Option<String>,
}

/// Starts the watchdog and follows it until its first verdict — or, when the connection drops
/// first, finds out over a new connection whether it was launched at all.
async fn launch(
    ctx: &Context,
    host: &Host,
    path: &str,
    opts: &ActivateOptions,
) -> anyhow::Result<Launched> {
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
        on_refusal: opts.on_refusal,
    };
    let started = Instant::now();
    let limit = opts.activation_timeout + Duration::from_secs(15);
    let run = drive::follow(
        ctx,
        host,
        &script::start(&act),
        &script::watchdog(&act),
        limit,
    )
    .await;
    let now = run.current.clone().unwrap_or_default();
    let mut on = Ongoing {
        token,
        path: path.to_string(),
        profile: host.profile.clone(),
        previous: now.system.clone(),
        boot_id: now.boot_id.clone(),
        mode: opts.mode,
        settle: opts.settle,
        confirm_timeout: opts.confirm_timeout,
        confirm_deadline: None,
        armed_seen: None,
        give_up: started + opts.activation_timeout + opts.confirm_timeout + Duration::from_secs(60),
    };
    let state = match (run.verdict, run.current.is_some()) {
        (Some(v), _) => v,
        // The connection ended before the launch was reported: look once whether it happened.
        (None, false) => {
            let error = run
                .error
                .unwrap_or_else(|| anyhow!("no answer from {} to the activation", host.name));
            match drive::observe(ctx, host, &on, Duration::from_secs(5)).await {
                Some(o) if o.state != WatchdogState::Absent => o.state,
                _ => return Err(error),
            }
        }
        // Launched, but the connection died before a verdict (a configuration that cuts the
        // network, say): the watchdog carries on, and is asked over brand-new connections.
        (None, true) => {
            if let Some(e) = &run.error {
                ctx.reporter.message(
                    crate::report::Level::Warn,
                    format!("{}: {e:#}; asking it over new connections", host.name),
                );
            }
            WatchdogState::Activating
        }
    };
    if state == WatchdogState::Armed {
        let now = Instant::now();
        on.armed_until(now + opts.confirm_timeout);
        on.armed_seen = Some(now);
    }
    Ok(Launched {
        on,
        state,
        now,
        new_link: run.new_link,
    })
}

async fn finished(
    ctx: &Context,
    host: &Host,
    mut value: Activated,
) -> anyhow::Result<Outcome<Activated>> {
    // The multiplexed connection may have died with the network during the activation.
    let target = ctx.target(host);
    let alive = match ctx.pool.get(&target).await {
        Ok(conn) => conn.check().await,
        Err(_) => false,
    };
    if !alive {
        let _ = ctx.pool.reconnect(&target).await;
    }
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

/// Confirms the armed activations of `hosts` (manual confirmation).
pub async fn confirm(ctx: &Arc<Context>, hosts: &[Arc<Host>]) -> Vec<HostResult<Activated>> {
    let c = ctx.clone();
    fan_out(ctx, hosts, "confirm", move |host| {
        let ctx = c.clone();
        async move {
            let armed = ctx.armed.lock().unwrap().get(&host.name).cloned();
            let Some(Armed { ongoing: mut on }) = armed else {
                bail!("{} has no activation waiting for confirmation", host.name);
            };
            if ctx.options.dry_run {
                return Ok(Outcome::planned(
                    Activated {
                        path: on.path,
                        state: "planned".into(),
                        ..Default::default()
                    },
                    "would confirm",
                ));
            }
            let result = drive::drive(&ctx, &host, &mut on, WatchdogState::Armed, true).await;
            ctx.armed.lock().unwrap().remove(&host.name);
            let value = Activated {
                path: on.path.clone(),
                previous: on.previous.clone(),
                ..Default::default()
            };
            let armed = on;
            match result {
                Ok(_) => {
                    ctx.reporter.emit(Event::HostState {
                        host: host.name.clone(),
                        state: FinalState::Deployed,
                        path: Some(armed.path),
                    });
                    finished(&ctx, &host, value).await
                }
                Err(e) => {
                    let rolled = e.downcast_ref::<RolledBack>().is_some();
                    ctx.reporter.emit(Event::HostState {
                        host: host.name.clone(),
                        state: if rolled {
                            FinalState::RolledBack
                        } else {
                            FinalState::Failed
                        },
                        path: if rolled {
                            armed.previous
                        } else {
                            Some(armed.path)
                        },
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
    if let Some(Armed { ongoing: armed }) = armed {
        let out = target
            .run_fresh_root(
                &ctx.pool.access(&host.name),
                &script::request_rollback(&armed.token),
                Duration::from_secs(75),
            )
            .await?;
        ctx.armed.lock().unwrap().remove(&host.name);
        match WatchdogState::parse(&out.stdout) {
            WatchdogState::RolledBack(_) => {}
            WatchdogState::Confirmed => bail!(
                "{} was confirmed before the rollback request arrived; it keeps {}",
                host.name,
                armed.path
            ),
            WatchdogState::RollbackFailed(why) => bail!(
                "the rollback on {} failed after {}: it needs attention",
                host.name,
                why.describe(armed.mode.as_str())
            ),
            other => bail!("rollback on {} ended in state {other:?}", host.name),
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
        .run_root(&script::plain_rollback(&host.profile), None)
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
