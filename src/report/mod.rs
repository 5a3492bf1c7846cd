//! Typed events from the engine and the sinks that render them; the engine itself never prints.

mod event;
mod json;
mod recorder;
mod summary;
mod terminal;

pub use event::{Event, FinalState, Level, StepState};
pub use json::JsonSink;
pub use recorder::{HostRecord, Recorder, StepRecord};
pub use summary::render_summary;
pub use terminal::TerminalSink;

use std::sync::Arc;

/// Something that renders events: the terminal view, JSON lines, a test collector.
pub trait Sink: Send + Sync {
    /// Called for every event, in order, from any thread.
    fn emit(&self, event: &Event);
    /// Called once before the final summary is printed (stop progress bars).
    fn finish(&self) {}
}

/// The fan-out point every primitive reports through; always records, then forwards to the sinks.
#[derive(Clone)]
pub struct Reporter {
    sinks: Arc<Vec<Box<dyn Sink>>>,
    recorder: Arc<Recorder>,
}

impl Reporter {
    /// A reporter feeding `sinks`.
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Reporter {
        Reporter {
            sinks: Arc::new(sinks),
            recorder: Arc::new(Recorder::default()),
        }
    }

    /// Sends one event to the recorder and every sink.
    pub fn emit(&self, event: Event) {
        self.recorder.record(&event);
        for sink in self.sinks.iter() {
            sink.emit(&event);
        }
    }

    /// What has happened so far, per host.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Lets the sinks wind down (progress bars end) before the summary.
    pub fn finish(&self) {
        for sink in self.sinks.iter() {
            sink.finish();
        }
    }

    /// A warning or note for the operator.
    pub fn message(&self, level: Level, text: impl Into<String>) {
        self.emit(Event::Message {
            level,
            text: text.into(),
        });
    }
}
