//! The activation protocol's words as Rust types: every state the target's watchdog (and the
//! start command) can record, parsed once where the text arrives.

/// What the watchdog's `state` file (or the start command) says about one activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchdogState {
    /// Start command: the host already runs the requested system; nothing was launched.
    Unchanged,
    /// Start command: the system path or its `bin/switch-to-configuration` is missing.
    NoSystem,
    /// Start command: the state directory could not be written.
    SetupFailed,
    /// No state file for this activation: never launched, or `/run` was emptied (a reboot).
    Absent,
    /// `switch-to-configuration` (or setting the profile first) is running.
    Activating,
    /// The new system runs; the watchdog waits for a confirmation.
    Armed,
    /// Confirmed: the watchdog sets the profile and makes the new system the boot default.
    Committing,
    /// Confirmed and committed: the new system runs and is the boot default.
    Confirmed,
    /// Finished without a confirmation window (`boot`, `dry-activate`, no magic rollback).
    Done,
    /// A pre-switch check (NixOS switch inhibitors) refused a live switch; nothing changed.
    Refused,
    /// A live switch was refused, and (`on_refusal: "boot"`) the new system was made the boot
    /// default instead: it runs after the next reboot.
    Staged,
    /// The watchdog is putting the previous system back.
    RollingBack,
    /// The previous system is active again.
    RolledBack(RollbackReason),
    /// The activation failed before anything needed undoing.
    Failed(String),
    /// The activation failed and so did the rollback: the host needs attention.
    RollbackFailed(RollbackReason),
    /// Anything else (a newer or older watchdog); kept verbatim for the message.
    Unknown(String),
}

/// Why a watchdog rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackReason {
    /// `switch-to-configuration` exited with this status.
    ActivationExit(i32),
    /// `switch-to-configuration` ran past `activation_timeout`.
    ActivationTimeout,
    /// No confirmation arrived within the confirm timeout.
    NoConfirmation,
    /// The deployer (or the runbook) asked for it.
    Requested,
    /// Setting the profile or the boot default after the confirmation failed.
    Commit(String),
    /// The watchdog could not set up its wake-up FIFO.
    NoFifo,
    /// Anything else, verbatim.
    Other(String),
}

impl WatchdogState {
    /// Parses one state word (surrounding blanks ignored).
    pub fn parse(text: &str) -> WatchdogState {
        let text = text.trim();
        match text {
            "unchanged" => return WatchdogState::Unchanged,
            "no-system" => return WatchdogState::NoSystem,
            "failed:setup" => return WatchdogState::SetupFailed,
            "absent" | "" => return WatchdogState::Absent,
            "activating" => return WatchdogState::Activating,
            "armed" => return WatchdogState::Armed,
            "committing" => return WatchdogState::Committing,
            "confirmed" => return WatchdogState::Confirmed,
            "done" => return WatchdogState::Done,
            "refused" => return WatchdogState::Refused,
            "staged" => return WatchdogState::Staged,
            "rolling-back" => return WatchdogState::RollingBack,
            _ => {}
        }
        if let Some(why) = text.strip_prefix("rolled-back:") {
            return WatchdogState::RolledBack(RollbackReason::parse(why));
        }
        if let Some(why) = text.strip_prefix("rollback-failed:") {
            return WatchdogState::RollbackFailed(RollbackReason::parse(why));
        }
        if let Some(why) = text.strip_prefix("failed:") {
            return WatchdogState::Failed(why.to_string());
        }
        WatchdogState::Unknown(text.to_string())
    }

    /// Whether the watchdog is still working towards a verdict (poll again).
    pub fn in_progress(&self) -> bool {
        matches!(
            self,
            WatchdogState::Activating | WatchdogState::Committing | WatchdogState::RollingBack
        )
    }
}

impl RollbackReason {
    /// Parses the part after `rolled-back:` / `rollback-failed:`.
    pub fn parse(why: &str) -> RollbackReason {
        match why {
            "activation-timeout" => RollbackReason::ActivationTimeout,
            "no-confirmation" => RollbackReason::NoConfirmation,
            "requested" => RollbackReason::Requested,
            "no-fifo" => RollbackReason::NoFifo,
            _ => {
                if let Some(code) = why
                    .strip_prefix("activation-exit-")
                    .and_then(|c| c.parse().ok())
                {
                    return RollbackReason::ActivationExit(code);
                }
                if let Some(what) = why.strip_prefix("commit-") {
                    return RollbackReason::Commit(what.to_string());
                }
                RollbackReason::Other(why.to_string())
            }
        }
    }

    /// A sentence fragment saying what happened, for `mode`'s `switch-to-configuration`.
    pub fn describe(&self, mode: &str) -> String {
        match self {
            RollbackReason::ActivationExit(code) => {
                format!("switch-to-configuration {mode} failed (exit status {code})")
            }
            RollbackReason::ActivationTimeout => "switch-to-configuration timed out".to_string(),
            RollbackReason::NoConfirmation => {
                "no confirmation reached the host in time".to_string()
            }
            RollbackReason::Requested => "a rollback was requested".to_string(),
            RollbackReason::Commit(what) => format!(
                "setting the profile and boot default after the confirmation failed ({what})"
            ),
            RollbackReason::NoFifo => "the watchdog could not create its wake-up FIFO".to_string(),
            RollbackReason::Other(why) => format!("the watchdog gave up ({why})"),
        }
    }
}

/// What one fresh-connection look at an activation showed (see `script::read_state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The watchdog's state.
    pub state: WatchdogState,
    /// The host's boot id (`/proc/sys/kernel/random/boot_id`): a new one means it rebooted.
    pub boot_id: Option<String>,
    /// Where `/run/current-system` points.
    pub current: Option<String>,
    /// Where the system profile points.
    pub profile: Option<String>,
    /// How long an armed watchdog still waits for a confirmation (by its own clock).
    pub window_left: Option<std::time::Duration>,
}

impl Observed {
    /// Parses the five lines `read_state` prints; `None` when the output is cut short (the
    /// connection died mid-answer).
    pub fn parse(stdout: &str) -> Option<Observed> {
        let mut lines = stdout.lines();
        let state = lines.next()?;
        let some = |l: Option<&str>| l.map(str::trim).filter(|l| !l.is_empty()).map(String::from);
        let boot_id = some(lines.next());
        let current = some(lines.next());
        let profile = some(lines.next());
        let window_left = some(lines.next())
            .and_then(|w| w.parse::<i64>().ok())
            .map(|w| std::time::Duration::from_secs(w.max(0) as u64));
        Some(Observed {
            state: WatchdogState::parse(state),
            boot_id,
            current,
            profile,
            window_left,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_watchdog_state_parses_to_its_variant() {
        use WatchdogState as S;
        for (text, state) in [
            ("unchanged", S::Unchanged),
            ("no-system", S::NoSystem),
            ("failed:setup", S::SetupFailed),
            ("absent", S::Absent),
            ("activating", S::Activating),
            ("armed", S::Armed),
            ("committing", S::Committing),
            ("confirmed", S::Confirmed),
            ("done", S::Done),
            ("refused", S::Refused),
            ("staged", S::Staged),
            ("rolling-back", S::RollingBack),
            (
                "rolled-back:activation-exit-2",
                S::RolledBack(RollbackReason::ActivationExit(2)),
            ),
            (
                "rolled-back:no-confirmation",
                S::RolledBack(RollbackReason::NoConfirmation),
            ),
            (
                "rolled-back:commit-boot-exit-1",
                S::RolledBack(RollbackReason::Commit("boot-exit-1".into())),
            ),
            (
                "rollback-failed:activation-timeout",
                S::RollbackFailed(RollbackReason::ActivationTimeout),
            ),
            ("failed:profile", S::Failed("profile".into())),
            ("weird", S::Unknown("weird".into())),
        ] {
            assert_eq!(WatchdogState::parse(text), state, "{text}");
        }
    }

    #[test]
    fn a_cut_short_observation_is_none() {
        assert_eq!(Observed::parse(""), None);
        let o = Observed::parse("armed\nb1\n/nix/store/a\n\n12\n").unwrap();
        assert_eq!(o.state, WatchdogState::Armed);
        assert_eq!(o.window_left, Some(std::time::Duration::from_secs(12)));
        assert_eq!(o.boot_id.as_deref(), Some("b1"));
        assert_eq!(o.profile, None);
    }
}
