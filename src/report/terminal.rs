//! The live terminal view: one line per host with its current step (progress bars on a terminal,
//! plain step lines otherwise), output lines prefixed with the host name, runbook prints on stdout.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::summary::fmt_duration;
use super::{Event, Level, Sink, StepState};
use crate::fleet::HostName;

/// Renders events for a person.
pub struct TerminalSink {
    live: Option<MultiProgress>,
    bars: Mutex<HashMap<HostName, ProgressBar>>,
    width: Mutex<usize>,
}

impl TerminalSink {
    /// Live bars when stderr is a terminal, plain lines otherwise.
    pub fn new() -> TerminalSink {
        let live = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        TerminalSink {
            live,
            bars: Mutex::new(HashMap::new()),
            width: Mutex::new(4),
        }
    }

    fn line(&self, text: &str) {
        match &self.live {
            Some(mp) => {
                let _ = mp.println(text);
            }
            None => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{text}");
            }
        }
    }

    fn bar(&self, host: &HostName) -> Option<ProgressBar> {
        let mp = self.live.as_ref()?;
        let mut bars = self.bars.lock().unwrap();
        let width = *self.width.lock().unwrap();
        Some(
            bars.entry(host.clone())
                .or_insert_with(|| {
                    let bar = mp.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template(&format!(
                            "{{spinner}} {{prefix:<{width}}}  {{msg}}"
                        ))
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(host.to_string());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                })
                .clone(),
        )
    }

    fn prefix(&self, host: &HostName) -> String {
        let width = *self.width.lock().unwrap();
        format!("{:<width$} |", host.as_str())
    }
}

impl Default for TerminalSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for TerminalSink {
    fn emit(&self, event: &Event) {
        match event {
            Event::RunStarted {
                hosts,
                dry_run,
                runbook,
            } => {
                let width = hosts
                    .iter()
                    .map(|h| h.as_str().len())
                    .max()
                    .unwrap_or(4)
                    .max(4);
                *self.width.lock().unwrap() = width;
                if *dry_run {
                    self.line(&format!("dry run of {runbook}: no host will be changed"));
                }
            }
            Event::Step {
                host,
                step,
                state,
                message,
                duration_ms,
            } => {
                let took =
                    duration_ms.map(|ms| format!(" ({})", fmt_duration(Duration::from_millis(ms))));
                let took = took.unwrap_or_default();
                let detail = message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                let text = match state {
                    StepState::Started => format!("{step}…"),
                    StepState::Succeeded => format!("{step} done{took}{detail}"),
                    StepState::Skipped => format!("{step} skipped{detail}"),
                    StepState::Planned => format!("{step} planned{detail}"),
                    StepState::Failed => format!("{step} FAILED{detail}"),
                };
                match self.bar(host) {
                    Some(bar) => {
                        bar.set_message(text.clone());
                        if *state == StepState::Failed {
                            self.line(&format!("{} {text}", self.prefix(host)));
                        }
                    }
                    None => self.line(&format!("{} {text}", self.prefix(host))),
                }
            }
            Event::Log { host, line, .. } => match host {
                Some(h) => self.line(&format!("{} {line}", self.prefix(h))),
                None => self.line(line),
            },
            Event::HostState { host, state, .. } => {
                if let Some(bar) = self.bar(host) {
                    bar.set_message(state.as_str().to_string());
                }
            }
            Event::Message { level, text } => match level {
                Level::Info => match &self.live {
                    Some(mp) => mp.suspend(|| println!("{text}")),
                    None => println!("{text}"),
                },
                Level::Warn => self.line(&format!("warning: {text}")),
                Level::Error => self.line(&format!("error: {text}")),
            },
            Event::RunFinished { .. } => {}
            Event::Evaluated {
                hosts,
                cached,
                evaluated,
                evaluators,
                duration_ms,
                ..
            } => self.line(&format!(
                "evaluated {hosts} host(s) in {}: {cached} from the evaluation cache, {evaluated} by {evaluators} evaluator(s)",
                fmt_duration(Duration::from_millis(*duration_ms))
            )),
        }
    }

    fn finish(&self) {
        // Drained, not just finished: the REPL reuses the sink, and the next input gets new bars.
        for (_, bar) in self.bars.lock().unwrap().drain() {
            bar.finish_and_clear();
        }
        if let Some(mp) = &self.live {
            let _ = mp.clear();
        }
    }
}
