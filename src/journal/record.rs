//! One journal record per host and run, and the run-wide facts (who, where, which runbook) it carries.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::fleet::HostName;

use super::time::rfc3339;

/// How a run left a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// A new system was activated.
    Deployed,
    /// The host already ran the wanted system.
    Unchanged,
    /// The deploy failed on this host.
    Failed,
    /// The deploy was undone (magic rollback or an explicit rollback).
    #[serde(rename = "rolled back")]
    RolledBack,
    /// The run selected the host but never touched it (stopped early, skipped).
    Untouched,
    /// A dry run: the record says what would have happened.
    Planned,
}

impl State {
    /// The state as written in the journal (`rolled back`).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Deployed => "deployed",
            State::Unchanged => "unchanged",
            State::Failed => "failed",
            State::RolledBack => "rolled back",
            State::Untouched => "untouched",
            State::Planned => "planned",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of `journal.jsonl`: what one run did to one host (see `docs/journal.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Identifies the run; shared by all records the run wrote.
    pub run_id: String,
    /// When the record was made, RFC 3339 in UTC.
    pub time: String,
    /// Who ran the deploy.
    pub user: String,
    /// The hostname of the deploying machine.
    pub machine: String,
    /// The runbook that ran.
    pub runbook: String,
    /// The `--on` selector of the run, if one was given.
    pub selector: Option<String>,
    /// The flake reference of the run.
    pub flake: String,
    /// The flake's locked revision, when known.
    pub flake_revision: Option<String>,
    /// The host this record is about.
    pub host: HostName,
    /// The system the host ran before, when known.
    pub path_before: Option<String>,
    /// The system the host runs now (or would run, for `planned`), when known.
    pub path_after: Option<String>,
    /// The profile generation that was activated, when one was.
    pub generation: Option<u64>,
    /// How the run left the host.
    pub state: State,
    /// How long the host's part of the run took.
    pub duration_ms: u64,
    /// An error or note, if any.
    pub message: Option<String>,
    /// Written the moment the host finished, before the run ended; a later record of the same
    /// run and host supersedes it. Absent (false) on the run's final records.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub progress: bool,
}

/// The facts shared by every record of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMeta {
    /// `<start time>-<pid>`, e.g. `20240501T123456Z-4242`.
    pub run_id: String,
    /// The user running nixdeploy.
    pub user: String,
    /// The deploying machine's hostname.
    pub machine: String,
    /// The runbook that runs.
    pub runbook: String,
    /// The `--on` selector, if any.
    pub selector: Option<String>,
    /// The flake reference.
    pub flake: String,
    /// The flake's locked revision, when known.
    pub flake_revision: Option<String>,
}

impl RunMeta {
    /// The facts of a run starting now in this process: user from `$USER`/`$LOGNAME`
    /// (else `uid <n>`), machine from `/proc/sys/kernel/hostname`, run id from time and pid.
    pub fn current(runbook: &str, selector: Option<&str>, flake: &str) -> RunMeta {
        let compact: String = rfc3339(SystemTime::now())
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        RunMeta {
            run_id: format!("{compact}-{}", std::process::id()),
            user: current_user(),
            machine: current_machine(),
            runbook: runbook.to_string(),
            selector: selector.map(str::to_string),
            flake: flake.to_string(),
            flake_revision: None,
        }
    }

    /// A record of this run for `host`, stamped now; paths, generation, duration and
    /// message start empty for the caller to fill in.
    pub fn record(&self, host: HostName, state: State) -> Record {
        Record {
            run_id: self.run_id.clone(),
            time: rfc3339(SystemTime::now()),
            user: self.user.clone(),
            machine: self.machine.clone(),
            runbook: self.runbook.clone(),
            selector: self.selector.clone(),
            flake: self.flake.clone(),
            flake_revision: self.flake_revision.clone(),
            host,
            path_before: None,
            path_after: None,
            generation: None,
            state,
            duration_ms: 0,
            message: None,
            progress: false,
        }
    }
}

fn current_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|name| !name.is_empty())
        // SAFETY: getuid has no preconditions and cannot fail.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }))
}

fn current_machine() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialise_as_the_documented_words() {
        let json = serde_json::to_string(&[State::Deployed, State::RolledBack]).unwrap();
        assert_eq!(json, r#"["deployed","rolled back"]"#);
    }

    #[test]
    fn a_run_stamps_its_records_with_its_own_facts() {
        let meta = RunMeta::current("runbooks/apply.rhai", Some("web-*"), ".");
        assert!(meta.run_id.ends_with(&format!("-{}", std::process::id())));
        assert!(!meta.user.is_empty() && !meta.machine.is_empty());
        let record = meta.record(HostName::new("web-1"), State::Deployed);
        assert_eq!(record.run_id, meta.run_id);
        assert_eq!(record.selector.as_deref(), Some("web-*"));
        assert!(record.time.ends_with('Z'));
    }

    #[test]
    fn unknown_fields_are_ignored_when_reading() {
        let meta = RunMeta::current("r.rhai", None, ".");
        let mut value =
            serde_json::to_value(meta.record(HostName::new("a"), State::Failed)).unwrap();
        value["added_in_a_later_version"] = serde_json::json!(true);
        let record: Record = serde_json::from_value(value).unwrap();
        assert_eq!(record.state, State::Failed);
    }
}
