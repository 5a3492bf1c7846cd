//! What `activate` is asked to do: the mode, who confirms, the settle window, and what to do
//! when NixOS refuses a live switch.

use std::time::Duration;

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

    pub(super) fn runs_now(self) -> bool {
        matches!(self, Mode::Switch | Mode::Test)
    }
}

/// Who confirms an armed activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmMode {
    /// nixdeploy confirms once the host has answered new connections through the settle window.
    Auto,
    /// The runbook calls `confirm(hosts)` or `rollback(hosts)` itself.
    Manual,
}

/// What to do when NixOS refuses a live switch (a pre-switch check such as switch inhibitors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefusal {
    /// Change nothing and fail the host.
    Fail,
    /// Make the new system the boot default instead (`switch-to-configuration boot`); it runs
    /// after the next reboot.
    Boot,
}

impl OnRefusal {
    /// Parses `fail` or `boot`.
    pub fn parse(s: &str) -> Result<OnRefusal, String> {
        match s {
            "fail" => Ok(OnRefusal::Fail),
            "boot" => Ok(OnRefusal::Boot),
            other => Err(format!(
                "unknown on_refusal `{other}`; expected \"fail\" or \"boot\""
            )),
        }
    }

    /// The word the watchdog script takes.
    pub fn as_str(self) -> &'static str {
        match self {
            OnRefusal::Fail => "fail",
            OnRefusal::Boot => "boot",
        }
    }
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
    /// How long the host must keep answering new connections before it is confirmed.
    pub settle: Duration,
    /// What to do when a live switch is refused.
    pub on_refusal: OnRefusal,
}

impl Default for ActivateOptions {
    fn default() -> Self {
        ActivateOptions {
            mode: Mode::Switch,
            magic_rollback: true,
            confirm_timeout: Duration::from_secs(30),
            activation_timeout: Duration::from_secs(240),
            confirm: ConfirmMode::Auto,
            settle: Duration::from_secs(2),
            on_refusal: OnRefusal::Fail,
        }
    }
}
