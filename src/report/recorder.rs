//! The recorder: per-host steps, timings and final state, kept for the summary, the journal and the exit status.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Event, FinalState, StepState};
use crate::fleet::HostName;

/// One step on one host.
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// The step name.
    pub step: String,
    /// Its last state.
    pub state: StepState,
    /// How long it took (once ended).
    pub duration: Option<Duration>,
    /// The error or note it ended with.
    pub message: Option<String>,
}

/// Everything known about one host in this run.
#[derive(Debug, Clone)]
pub struct HostRecord {
    /// The final state so far.
    pub state: FinalState,
    /// Steps in the order they started.
    pub steps: Vec<StepRecord>,
    /// The system path the host ends on (or would, in a dry run).
    pub path: Option<String>,
    /// The first error seen on this host.
    pub error: Option<String>,
    /// When the first step started.
    pub started: Option<Instant>,
    /// When the last step ended.
    pub ended: Option<Instant>,
}

impl Default for HostRecord {
    fn default() -> Self {
        HostRecord {
            state: FinalState::Untouched,
            steps: Vec::new(),
            path: None,
            error: None,
            started: None,
            ended: None,
        }
    }
}

/// Collects what happened to every host.
#[derive(Debug, Default)]
pub struct Recorder {
    hosts: Mutex<BTreeMap<HostName, HostRecord>>,
    started: Mutex<BTreeMap<(HostName, String), Instant>>,
}

impl Recorder {
    /// Folds one event into the record.
    pub fn record(&self, event: &Event) {
        match event {
            Event::RunStarted { hosts, .. } => {
                let mut map = self.hosts.lock().unwrap();
                for h in hosts {
                    map.entry(h.clone()).or_default();
                }
            }
            Event::Step {
                host,
                step,
                state,
                message,
                duration_ms,
            } => {
                let now = Instant::now();
                let mut map = self.hosts.lock().unwrap();
                let rec = map.entry(host.clone()).or_default();
                rec.started.get_or_insert(now);
                let key = (host.clone(), step.clone());
                if *state == StepState::Started {
                    self.started.lock().unwrap().insert(key, now);
                    rec.steps.push(StepRecord {
                        step: step.clone(),
                        state: *state,
                        duration: None,
                        message: None,
                    });
                    return;
                }
                rec.ended = Some(now);
                let began = self.started.lock().unwrap().remove(&key);
                let duration = duration_ms
                    .map(Duration::from_millis)
                    .or_else(|| began.map(|b| now.duration_since(b)));
                match rec
                    .steps
                    .iter_mut()
                    .rev()
                    .find(|s| s.step == *step && s.state == StepState::Started)
                {
                    Some(s) => {
                        s.state = *state;
                        s.duration = duration;
                        s.message = message.clone();
                    }
                    None => rec.steps.push(StepRecord {
                        step: step.clone(),
                        state: *state,
                        duration,
                        message: message.clone(),
                    }),
                }
                if *state == StepState::Failed && rec.error.is_none() {
                    rec.error = message.clone();
                }
            }
            Event::HostState { host, state, path } => {
                let mut map = self.hosts.lock().unwrap();
                let rec = map.entry(host.clone()).or_default();
                rec.state = *state;
                if path.is_some() {
                    rec.path = path.clone();
                }
            }
            _ => {}
        }
    }

    /// The record of every host seen, by name.
    pub fn hosts(&self) -> BTreeMap<HostName, HostRecord> {
        self.hosts.lock().unwrap().clone()
    }

    /// The current final state of one host.
    pub fn state(&self, host: &HostName) -> FinalState {
        self.hosts
            .lock()
            .unwrap()
            .get(host)
            .map(|r| r.state)
            .unwrap_or(FinalState::Untouched)
    }

    /// Did every host end well?
    pub fn all_good(&self) -> bool {
        self.hosts
            .lock()
            .unwrap()
            .values()
            .all(|r| r.state.is_good())
    }
}
