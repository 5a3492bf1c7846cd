//! `--json`: one JSON object per event on stdout, for CI.

use std::io::Write;
use std::sync::Mutex;
use std::time::SystemTime;

use super::{Event, Sink};

/// Writes every event as a JSON line with a `time` field (seconds since the epoch, fractional).
pub struct JsonSink {
    out: Mutex<Box<dyn Write + Send>>,
}

impl JsonSink {
    /// A sink writing to stdout.
    pub fn stdout() -> JsonSink {
        JsonSink {
            out: Mutex::new(Box::new(std::io::stdout())),
        }
    }
}

impl Sink for JsonSink {
    fn emit(&self, event: &Event) {
        let mut value = serde_json::to_value(event).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            obj.insert("time".into(), serde_json::json!(t.as_secs_f64()));
        }
        let mut out = self.out.lock().unwrap();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }
}
