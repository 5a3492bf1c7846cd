//! The event types: what happened, to which host, in which step.

use serde::Serialize;

use crate::fleet::HostName;

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// The step began on this host.
    Started,
    /// It ended well.
    Succeeded,
    /// It failed on this host.
    Failed,
    /// Nothing to do (already there).
    Skipped,
    /// Dry run: it would have run.
    Planned,
}

/// How a host ended the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum FinalState {
    /// Nothing was done to it.
    #[serde(rename = "untouched")]
    Untouched,
    /// Dry run: changes were planned, none made.
    #[serde(rename = "planned")]
    Planned,
    /// It already ran the requested system (or only read-only steps ran).
    #[serde(rename = "unchanged")]
    Unchanged,
    /// Its closure was copied but nothing was activated.
    #[serde(rename = "copied")]
    Copied,
    /// A new system was activated and, where asked, confirmed.
    #[serde(rename = "deployed")]
    Deployed,
    /// It was returned to its previous generation.
    #[serde(rename = "rolled back")]
    RolledBack,
    /// A step failed on it.
    #[serde(rename = "failed")]
    Failed,
}

impl FinalState {
    /// The word shown in summaries and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            FinalState::Untouched => "untouched",
            FinalState::Planned => "planned",
            FinalState::Unchanged => "unchanged",
            FinalState::Copied => "copied",
            FinalState::Deployed => "deployed",
            FinalState::RolledBack => "rolled back",
            FinalState::Failed => "failed",
        }
    }

    /// Does this state count as ending well for the exit status?
    pub fn is_good(self) -> bool {
        !matches!(self, FinalState::Failed | FinalState::RolledBack)
    }
}

/// Severity of a free-form message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Runbook `print` output and notes.
    Info,
    /// Something the operator should look at.
    Warn,
    /// A failure explained in words.
    Error,
}

/// One thing that happened during a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The runbook starts.
    RunStarted {
        /// The runbook path.
        runbook: String,
        /// Every host the run may touch (after `--on`).
        hosts: Vec<HostName>,
        /// `--dry-run`.
        dry_run: bool,
    },
    /// A step changed state on one host.
    Step {
        /// The host.
        host: HostName,
        /// `build`, `copy`, `activate`, `exec`, ...
        step: String,
        /// Where the step is.
        state: StepState,
        /// Detail: an error, what was skipped or planned.
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// How long the step took, when it ended.
        #[serde(skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
    },
    /// A line of output (remote command, build log, activation log).
    Log {
        /// The host it came from; `None` for deployer-side tools such as a local build.
        host: Option<HostName>,
        /// The step it belongs to.
        step: String,
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The line, without its newline.
        line: String,
    },
    /// A host's state for the summary changed.
    HostState {
        /// The host.
        host: HostName,
        /// Its new final state.
        state: FinalState,
        /// The system path it now runs or would run, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// The selected hosts' toplevels were evaluated (before the runbook starts).
    Evaluated {
        /// Hosts whose toplevels were needed.
        hosts: usize,
        /// How many came from the evaluation cache.
        cached: usize,
        /// How many Nix evaluated (failures included).
        evaluated: usize,
        /// How many failed to evaluate.
        failed: usize,
        /// Evaluator processes used.
        evaluators: usize,
        /// Wall time of the toplevel pass.
        duration_ms: u64,
    },
    /// A message not tied to one step.
    Message {
        /// Severity.
        level: Level,
        /// The text.
        text: String,
    },
    /// The run ended.
    RunFinished {
        /// The process exit code.
        exit_code: u8,
        /// Final state per host.
        hosts: Vec<(HostName, FinalState)>,
    },
}
