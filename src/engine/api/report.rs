//! `Report`: what a primitive did on each host — `ok`, `succeeded`, `failed`, and `r["web-1"]`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map};

use super::{fail, HostRef};
use crate::fleet::Host;

/// One host's line in a report.
#[derive(Clone)]
pub struct Entry {
    /// The host.
    pub host: Arc<Host>,
    /// Did the step end well (done, skipped or planned)?
    pub ok: bool,
    /// `succeeded`, `skipped`, `planned` or `failed`.
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
    /// The system path this entry carries to the next step.
    pub path: Option<String>,
    /// Step-specific fields (`stdout`, `status`, `generation`, ...).
    pub fields: Map,
}

struct Data {
    step: String,
    at: String,
    entries: Vec<Entry>,
    inspected: AtomicBool,
}

/// The result of one primitive over its hosts. Cheap to clone (shared).
#[derive(Clone)]
pub struct Report(Arc<Data>);

impl Report {
    /// A report of `step`, called at `at` (`file:line:col`).
    pub fn new(step: &str, at: String, entries: Vec<Entry>) -> Report {
        Report(Arc::new(Data {
            step: step.to_string(),
            at,
            entries,
            inspected: AtomicBool::new(false),
        }))
    }

    /// The entries, in host order.
    pub fn entries(&self) -> &[Entry] {
        &self.0.entries
    }

    /// The primitive's name.
    pub fn step(&self) -> &str {
        &self.0.step
    }

    /// Where the primitive was called.
    pub fn at(&self) -> &str {
        &self.0.at
    }

    /// Every entry ended well.
    pub fn ok(&self) -> bool {
        self.0.entries.iter().all(|e| e.ok)
    }

    /// The runbook looked at the outcome (or handed the report on).
    pub fn mark_inspected(&self) {
        self.0.inspected.store(true, Ordering::Relaxed);
    }

    /// Did the runbook look at the outcome?
    pub fn inspected(&self) -> bool {
        self.0.inspected.load(Ordering::Relaxed)
    }

    /// The hosts that failed.
    pub fn failed_hosts(&self) -> Vec<Arc<Host>> {
        self.0
            .entries
            .iter()
            .filter(|e| !e.ok)
            .map(|e| e.host.clone())
            .collect()
    }

    fn entry_map(e: &Entry) -> Map {
        let mut m = e.fields.clone();
        m.insert("host".into(), e.host.name.to_string().into());
        m.insert("ok".into(), e.ok.into());
        m.insert("state".into(), e.state.clone().into());
        m.insert(
            "error".into(),
            e.error.clone().map(Dynamic::from).unwrap_or(Dynamic::UNIT),
        );
        if let Some(p) = &e.path {
            m.entry("path".into()).or_insert_with(|| p.clone().into());
        }
        m
    }

    fn hosts_where(&self, pred: impl Fn(&Entry) -> bool) -> Array {
        self.0
            .entries
            .iter()
            .filter(|e| pred(e))
            .map(|e| Dynamic::from(HostRef(e.host.clone())))
            .collect()
    }

    /// A readable multi-line summary (what `print(report)` shows).
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} report ({}):",
            self.0.step,
            if self.ok() { "ok" } else { "FAILED" }
        );
        for e in &self.0.entries {
            out.push_str(&format!("\n  {}: {}", e.host.name, e.state));
            if let Some(err) = &e.error {
                out.push_str(&format!(" — {err}"));
            }
        }
        out
    }
}

/// Registers the `Report` type, its properties and indexer.
pub fn register_type(engine: &mut Engine) {
    engine
        .register_type_with_name::<Report>("Report")
        .register_get("ok", |r: &mut Report| {
            r.mark_inspected();
            r.ok()
        })
        .register_get("failed", |r: &mut Report| {
            r.mark_inspected();
            r.hosts_where(|e| !e.ok)
        })
        .register_get("succeeded", |r: &mut Report| {
            r.mark_inspected();
            r.hosts_where(|e| e.ok)
        })
        .register_get("hosts", |r: &mut Report| r.hosts_where(|_| true))
        .register_get("planned", |r: &mut Report| {
            r.0.entries.iter().any(|e| e.state == "planned")
        })
        .register_get("step", |r: &mut Report| r.0.step.clone())
        .register_get("errors", |r: &mut Report| {
            r.mark_inspected();
            let mut m = Map::new();
            for e in r.0.entries.iter().filter(|e| !e.ok) {
                m.insert(
                    e.host.name.as_str().into(),
                    e.error.clone().unwrap_or_default().into(),
                );
            }
            m
        })
        .register_get("entries", |r: &mut Report| {
            r.mark_inspected();
            r.0.entries
                .iter()
                .map(|e| Dynamic::from(Report::entry_map(e)))
                .collect::<Array>()
        })
        .register_fn("len", |r: &mut Report| r.0.entries.len() as i64)
        .register_indexer_get(
            |r: &mut Report, name: &str| -> Result<Map, Box<EvalAltResult>> {
                r.mark_inspected();
                match r.0.entries.iter().find(|e| e.host.name.as_str() == name) {
                    Some(e) => Ok(Report::entry_map(e)),
                    None => {
                        let names: Vec<&str> =
                            r.0.entries.iter().map(|e| e.host.name.as_str()).collect();
                        fail(format!(
                            "this {} report has no host `{name}`; it covers: {}",
                            r.0.step,
                            names.join(", ")
                        ))
                    }
                }
            },
        )
        .register_fn("to_string", |r: &mut Report| r.render())
        .register_fn("to_debug", |r: &mut Report| r.render());
}

impl Report {
    /// Builds a report from a step's per-host results; `path_of` says which system path an entry
    /// carries to the next step.
    pub fn from_results<T: serde::Serialize>(
        step: &str,
        at: String,
        results: Vec<crate::steps::HostResult<T>>,
        path_of: impl Fn(&T) -> Option<String>,
    ) -> Report {
        use crate::report::StepState;
        let entries = results
            .into_iter()
            .map(|(host, r)| match r {
                Ok(o) => {
                    let fields = rhai::serde::to_dynamic(&o.value)
                        .ok()
                        .and_then(|d| d.try_cast::<Map>())
                        .unwrap_or_default();
                    let (ok, state) = match o.state {
                        StepState::Failed => (false, "failed"),
                        StepState::Skipped => (true, "skipped"),
                        StepState::Planned => (true, "planned"),
                        _ => (true, "succeeded"),
                    };
                    let error = if ok { None } else { o.message.clone() };
                    let mut fields = fields;
                    if let Some(m) = &o.message {
                        fields.insert("message".into(), m.clone().into());
                    }
                    Entry {
                        path: path_of(&o.value),
                        host,
                        ok,
                        state: state.into(),
                        error,
                        fields,
                    }
                }
                Err(e) => Entry {
                    host,
                    ok: false,
                    state: "failed".into(),
                    error: Some(e),
                    path: None,
                    fields: Map::new(),
                },
            })
            .collect();
        Report::new(step, at, entries)
    }
}
