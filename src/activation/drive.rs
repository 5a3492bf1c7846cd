//! Driving one activation to its verdict: follow the watchdog's log, then — whatever happened
//! to the connection — look at the host over brand-new connections, watch it through the settle
//! window, confirm, and read the verdict from the watchdog's state file.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use super::protocol::{Observed, WatchdogState};
use super::{script, Current, Mode, RolledBack};
use crate::context::Context;
use crate::fleet::Host;
use crate::report::{Event, Level};
use crate::transport::Stream;

/// How often the host is looked at while nothing is expected to change quickly.
const POLL: Duration = Duration::from_millis(500);
/// How long the deployer keeps asking a silent host for its verdict after every window the
/// watchdog could still act in has passed (a rolled-back host needs a moment to come back).
const GRACE: Duration = Duration::from_secs(60);

/// One activation in flight, as the deployer knows it.
#[derive(Debug, Clone)]
pub struct Ongoing {
    /// The watchdog's token.
    pub token: String,
    /// The new system.
    pub path: String,
    /// The profile the watchdog sets.
    pub profile: String,
    /// What the host ran before.
    pub previous: Option<String>,
    /// The host's boot id when the activation started.
    pub boot_id: Option<String>,
    /// The activation mode (for messages).
    pub mode: Mode,
    /// How long the host must keep answering fresh connections before it is confirmed.
    pub settle: Duration,
    /// The confirm timeout (to estimate the window when the arming was not seen).
    pub confirm_timeout: Duration,
    /// After this no confirmation can reach the watchdog in time (known once armed).
    pub confirm_deadline: Option<Instant>,
    /// When the start command reported the watchdog `armed`: the settle window starts there.
    pub armed_seen: Option<Instant>,
    /// The last moment to wait for the host to tell its verdict.
    pub give_up: Instant,
}

/// How an activation ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The host already ran the system; nothing was launched.
    Unchanged,
    /// The new system runs (and, for `switch`, is the profile and the boot default).
    Deployed,
    /// A live switch was refused; the new system is the boot default for the next boot.
    Staged,
    /// Armed and left for the runbook to confirm (`confirm: "manual"`).
    Armed,
}

/// What the start command reported.
#[derive(Default)]
pub struct Followed {
    /// What the host ran before, when the command got that far.
    pub current: Option<Current>,
    /// The state the follow stopped at (read from the state file), when it got that far.
    pub verdict: Option<WatchdogState>,
    /// The generation link the activation created.
    pub new_link: Option<String>,
    /// Why the command ended without a verdict.
    pub error: Option<anyhow::Error>,
}

/// Runs a start command, streaming the activation log as events, until the watchdog's state
/// file holds a verdict. Everything read is kept even when the connection dies half-way.
pub async fn follow(
    ctx: &Context,
    host: &Host,
    command: &str,
    stdin: &str,
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
    let protocol = Arc::new(Mutex::new(Vec::new()));
    let kept = protocol.clone();
    let reporter = ctx.reporter.clone();
    let name = host.name.clone();
    let on_line = move |stream: Stream, line: &str| {
        if stream != Stream::Stdout {
            return;
        }
        if let Some(log) = line.strip_prefix('|') {
            if !log.is_empty() && !log.starts_with("@@nixdeploy-state ") {
                reporter.emit(Event::Log {
                    host: Some(name.clone()),
                    step: "activate".into(),
                    stream: "stdout",
                    line: log.to_string(),
                });
            }
        } else if line.starts_with("@@nixdeploy-") {
            kept.lock().unwrap().push(line.to_string());
        }
    };
    let out = tokio::time::timeout(
        limit,
        conn.run_root_streaming(command, Some(stdin.as_bytes()), &on_line),
    )
    .await
    .map_err(|_| anyhow!("activation on {} did not finish in time", host.name))
    .and_then(|r| r);
    let error = match out {
        Ok(o) if o.status == Some(0) => None,
        Ok(o) => Some(anyhow!(
            "the connection to {} ended during the activation (status {:?})",
            host.name,
            o.status
        )),
        Err(e) => Some(e),
    };
    let lines = protocol.lock().unwrap().clone();
    parse_followed(&lines, error)
}

/// Reads the protocol lines (`@@nixdeploy-…`) of a start command; log lines never get here.
pub fn parse_followed(lines: &[String], error: Option<anyhow::Error>) -> Followed {
    let field = |tag: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(tag))
            .map(|v| v.trim().to_string())
    };
    // Tags without their separating space: an empty value may lose its trailing blank.
    let some = |v: Option<String>| v.filter(|v| !v.is_empty());
    let current = field("@@nixdeploy-current").map(|system| Current {
        system: some(Some(system)),
        profile: some(field("@@nixdeploy-profile")),
        profile_link: some(field("@@nixdeploy-link")),
        boot_id: some(field("@@nixdeploy-boot")),
    });
    let verdict = some(field("@@nixdeploy-verdict")).map(|v| WatchdogState::parse(&v));
    let error = match (&verdict, error) {
        // A verdict in hand: how the command ended does not matter.
        (Some(_), _) => None,
        (None, e) => {
            Some(e.unwrap_or_else(|| anyhow!("the activation log ended without a verdict")))
        }
    };
    Followed {
        current,
        verdict,
        new_link: some(field("@@nixdeploy-new-link")),
        error,
    }
}

/// One look at the activation over a brand-new connection; `None` when the host does not answer.
pub async fn observe(ctx: &Context, host: &Host, on: &Ongoing, wait: Duration) -> Option<Observed> {
    let out = ctx
        .target(host)
        .run_fresh_root(
            &ctx.pool.access(&host.name),
            &script::read_state(&on.token, &on.profile),
            wait,
        )
        .await
        .ok()?;
    if out.status != Some(0) {
        return None;
    }
    Observed::parse(&out.stdout)
}

/// Drives the activation from `state` to its end. `confirm` says whether an armed activation is
/// confirmed here (after the settle window) or handed back to the runbook.
pub async fn drive(
    ctx: &Context,
    host: &Host,
    on: &mut Ongoing,
    mut state: WatchdogState,
    confirm: bool,
) -> anyhow::Result<Ending> {
    let mut seen: Option<Observed> = None;
    loop {
        if ctx.interrupt.aborting() {
            bail!(
                "abandoned in state {state:?} (second interrupt); an unconfirmed activation rolls itself back when its confirm timeout passes"
            );
        }
        match state {
            WatchdogState::Unchanged => return Ok(Ending::Unchanged),
            WatchdogState::Done | WatchdogState::Confirmed => return Ok(Ending::Deployed),
            WatchdogState::Staged => return Ok(Ending::Staged),
            WatchdogState::NoSystem => bail!(
                "{} is not on {} or has no bin/switch-to-configuration; copy it first",
                on.path,
                host.name
            ),
            WatchdogState::SetupFailed => bail!(
                "could not start the activation on {}: cannot write to {}",
                host.name,
                script::STATE_DIR
            ),
            WatchdogState::Refused => bail!(
                "{} refused a live switch to {}: a pre-switch check failed (NixOS switch inhibitors: a change to systemd or dbus, say, needs a reboot); nothing was changed. Pass `on_refusal: \"boot\"` to make it the boot default instead, then reboot",
                host.name,
                on.path
            ),
            WatchdogState::RolledBack(why) => {
                return Err(RolledBack(format!(
                    "{}; {} rolled back and its previous system is active again",
                    why.describe(on.mode.as_str()),
                    host.name
                ))
                .into())
            }
            WatchdogState::RollbackFailed(why) => bail!(
                "{} and so did the rollback on {}: it needs attention (see its activation log in {})",
                why.describe(on.mode.as_str()),
                host.name,
                script::activation_dir(&on.token)
            ),
            WatchdogState::Failed(why) => bail!("activation failed on {} ({why})", host.name),
            WatchdogState::Unknown(s) => {
                bail!("unexpected activation state on {}: `{s}`", host.name)
            }
            WatchdogState::Armed if !confirm => return Ok(Ending::Armed),
            WatchdogState::Armed => {
                let window_open = on.confirm_deadline.is_some_and(|d| Instant::now() < d);
                let o = if window_open {
                    settle_and_confirm(ctx, host, on).await?
                } else {
                    wait_for_change(ctx, host, on, &WatchdogState::Armed).await?
                };
                state = o.state.clone();
                seen = Some(o);
            }
            WatchdogState::Absent => return judge_absent(host, on, seen.as_ref()),
            WatchdogState::Activating | WatchdogState::Committing | WatchdogState::RollingBack => {
                let o = wait_for_change(ctx, host, on, &state).await?;
                state = o.state.clone();
                seen = Some(o);
            }
        }
        if let Some(o) = &seen {
            note_window(on, o);
        }
    }
}

/// Once the watchdog is armed, learns when its window ends (from what it told us, else from
/// now: a window that really ends earlier only makes a late confirmation show the rollback).
fn note_window(on: &mut Ongoing, o: &Observed) {
    if o.state != WatchdogState::Armed {
        return;
    }
    if on.confirm_deadline.is_none() {
        let left = o.window_left.unwrap_or(on.confirm_timeout);
        on.armed_until(Instant::now() + left);
    }
}

impl Ongoing {
    /// The watchdog is armed until `deadline`: the activation is over, so the verdict is due
    /// once that window has passed (plus the time a rolled-back host needs to answer again).
    pub fn armed_until(&mut self, deadline: Instant) {
        self.confirm_deadline = Some(deadline);
        self.give_up = deadline + GRACE;
    }
}

/// The settle window, then the confirmation: `settle` seconds after the host was last seen
/// armed and answering, the confirmation goes over a brand-new connection. The window starts
/// when the activation reported `armed` (over the pooled connection, a moment after
/// `switch-to-configuration` returned) or, when that report was lost, at the first brand-new
/// connection the host answers. A confirmation the host does not answer starts the window
/// again, from the next brand-new connection it answers. So a host whose network goes away
/// within the window and stays away is never confirmed, at the price of one new connection per
/// host when nothing goes wrong. Gives up on confirming once the watchdog's window has passed,
/// and then waits for its verdict.
async fn settle_and_confirm(
    ctx: &Context,
    host: &Host,
    on: &mut Ongoing,
) -> anyhow::Result<Observed> {
    let deadline = on.confirm_deadline.unwrap_or_else(Instant::now);
    let target = ctx.target(host);
    let mut stable_since: Option<Instant> = on.armed_seen.take();
    let mut missed = false;
    loop {
        let now = Instant::now();
        if now >= deadline || ctx.interrupt.aborting() {
            return wait_for_change(ctx, host, on, &WatchdogState::Armed).await;
        }
        let left = deadline - now;
        let wait = left.clamp(Duration::from_secs(1), Duration::from_secs(3));
        let answer = match stable_since {
            // Within the window: nothing to ask, only to wait (in short sleeps, so a second
            // interrupt is heard).
            Some(since) if since.elapsed() < on.settle => {
                let rest = on.settle - since.elapsed();
                tokio::time::sleep(rest.min(Duration::from_millis(500)).min(left)).await;
                continue;
            }
            Some(_) => target
                .run_fresh_root(
                    &ctx.pool.access(&host.name),
                    &script::confirm(&on.token, &on.profile),
                    wait + Duration::from_secs(12),
                )
                .await
                .ok()
                .filter(|o| o.status == Some(0))
                .and_then(|o| Observed::parse(&o.stdout)),
            None => observe(ctx, host, on, wait).await,
        };
        match answer {
            Some(o) if o.state == WatchdogState::Armed => {
                stable_since.get_or_insert_with(Instant::now);
            }
            Some(o) => return Ok(o),
            None => {
                if stable_since.is_some() && !missed {
                    ctx.reporter.message(
                        Level::Warn,
                        format!(
                            "{} stopped answering new connections after its activation; not confirming",
                            host.name
                        ),
                    );
                }
                missed = true;
                stable_since = None;
                // One look per second until it answers again.
                tokio::time::sleep(Duration::from_secs(1).min(left)).await;
            }
        }
    }
}

/// Looks at the host over brand-new connections until its state is no longer `from`, or until
/// `on.give_up`.
async fn wait_for_change(
    ctx: &Context,
    host: &Host,
    on: &Ongoing,
    from: &WatchdogState,
) -> anyhow::Result<Observed> {
    let mut answered = false;
    loop {
        if ctx.interrupt.aborting() {
            bail!(
                "abandoned while waiting for {} (second interrupt)",
                host.name
            );
        }
        let wait = on
            .give_up
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_secs(1), Duration::from_secs(5));
        if let Some(o) = observe(ctx, host, on, wait).await {
            answered = true;
            if &o.state != from {
                return Ok(o);
            }
        }
        if Instant::now() >= on.give_up {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    if answered {
        bail!(
            "{} is still in state {from:?} long after every timeout; look at {} on the host",
            host.name,
            script::activation_dir(&on.token)
        )
    }
    bail!(
        "{} has not answered a new connection since the activation started, so its outcome is unknown: if no confirmation reached it, its watchdog rolls it back once the confirm timeout passes; check it by hand",
        host.name
    )
}

/// The watchdog's state is gone: the host rebooted (its `/run` is new), or the activation never
/// started. Judged by what the host runs now.
fn judge_absent(host: &Host, on: &Ongoing, seen: Option<&Observed>) -> anyhow::Result<Ending> {
    let Some(o) = seen else {
        bail!("the activation on {} left no state behind", host.name);
    };
    let rebooted = o.boot_id.is_some() && on.boot_id.is_some() && o.boot_id != on.boot_id;
    if !rebooted {
        bail!(
            "the activation on {} never started (no state in {}); nothing was changed",
            host.name,
            script::activation_dir(&on.token)
        );
    }
    let runs = o.current.as_deref();
    if runs == Some(on.path.as_str()) && o.profile.as_deref() == Some(on.path.as_str()) {
        return Ok(Ending::Deployed);
    }
    if runs.is_some() && runs == on.previous.as_deref() {
        return Err(RolledBack(format!(
            "{} rebooted before the activation was confirmed and came back on its previous system",
            host.name
        ))
        .into());
    }
    bail!(
        "{} rebooted during the activation and now runs {}, neither the new system nor the previous one",
        host.name,
        runs.unwrap_or("nothing")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn the_verdict_comes_from_the_verdict_line_only() {
        let f = parse_followed(
            &lines(
                "@@nixdeploy-current /nix/store/a\n@@nixdeploy-profile /nix/store/a\n\
                 @@nixdeploy-link system-1-link\n@@nixdeploy-boot b1\n\
                 @@nixdeploy-verdict armed\n@@nixdeploy-new-link \n",
            ),
            None,
        );
        assert_eq!(f.verdict, Some(WatchdogState::Armed));
        let now = f.current.unwrap();
        assert_eq!(now.boot_id.as_deref(), Some("b1"));
        assert_eq!(f.new_link, None);
        assert!(f.error.is_none());
    }

    #[test]
    fn a_dropped_connection_keeps_what_was_read() {
        let f = parse_followed(
            &lines("@@nixdeploy-current /nix/store/a\n@@nixdeploy-boot b1\n"),
            Some(anyhow!("lost")),
        );
        assert!(f.current.is_some());
        assert_eq!(f.verdict, None);
        assert!(f.error.is_some());
    }
}
