//! The final summary table: every selected host, its final state, and the time of each step.

use std::fmt::Write;
use std::time::Duration;

use super::{Recorder, StepState};

/// Renders the summary table (plain text, one row per host).
pub fn render_summary(recorder: &Recorder) -> String {
    let hosts = recorder.hosts();
    let width = hosts
        .keys()
        .map(|h| h.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(out, "{:<width$}  {:<11}  steps", "host", "state");
    for (name, rec) in &hosts {
        let steps: Vec<String> = rec
            .steps
            .iter()
            .map(|s| {
                let mark = match s.state {
                    StepState::Failed => "!",
                    StepState::Skipped => "=",
                    StepState::Planned => "?",
                    _ => "",
                };
                match s.duration {
                    Some(d) => format!("{}{mark} {}", s.step, fmt_duration(d)),
                    None => format!("{}{mark}", s.step),
                }
            })
            .collect();
        let steps = if steps.is_empty() {
            "-".to_string()
        } else {
            steps.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<11}  {steps}",
            name.as_str(),
            rec.state.as_str()
        );
        if let Some(err) = &rec.error {
            let _ = writeln!(out, "{:<width$}  {:<11}  ↳ {err}", "", "");
        }
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for rec in hosts.values() {
        let word = rec.state.as_str().to_string();
        match counts.iter_mut().find(|(w, _)| *w == word) {
            Some((_, n)) => *n += 1,
            None => counts.push((word, 1)),
        }
    }
    let tally: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
    let _ = writeln!(out, "{} host(s): {}", hosts.len(), tally.join(", "));
    out
}

/// `850ms`, `4.2s`, `3m05s`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}
