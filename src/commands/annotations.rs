//! GitHub Actions annotations: when `GITHUB_ACTIONS=true`, one `::error` workflow command per
//! host that failed or was rolled back, so the job page shows them without opening the log.

use crate::report::{FinalState, Recorder, StepState};

/// Whether the run is inside a GitHub Actions job (the runner sets `GITHUB_ACTIONS=true`).
pub fn enabled() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// Prints an annotation per failed or rolled-back host to stderr (the runner reads workflow
/// commands from both streams; stdout stays clean for `--json`).
pub fn print_failed_hosts(recorder: &Recorder, runbook: &str) {
    for line in failed_host_lines(recorder, runbook) {
        eprintln!("{line}");
    }
}

/// The annotation lines: one per host that failed or was rolled back, and one per host on
/// which a step failed although the host ended well (a failed `exec`, a handled check).
pub fn failed_host_lines(recorder: &Recorder, runbook: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, rec) in recorder.hosts() {
        let failed_step = rec
            .steps
            .iter()
            .rev()
            .find(|s| s.state == StepState::Failed);
        let why = |fallback: &str| {
            rec.error
                .clone()
                .or_else(|| failed_step.and_then(|s| s.message.clone()))
                .unwrap_or_else(|| fallback.to_string())
        };
        let title = match (rec.state, failed_step) {
            (FinalState::RolledBack, _) => format!("nixdeploy: {name} rolled back"),
            (FinalState::Failed, _) => format!("nixdeploy: {name} failed"),
            (_, Some(step)) => format!("nixdeploy: {} failed on {name}", step.step),
            _ => continue,
        };
        lines.push(error_line(
            &title,
            &format!("{runbook}: {}", why("see the job log")),
        ));
    }
    lines
}

/// `::error title=TITLE::MESSAGE`, with both parts escaped as the runner expects.
pub fn error_line(title: &str, message: &str) -> String {
    format!(
        "::error title={}::{}",
        escape_property(title),
        escape_data(message)
    )
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_escape_what_the_runner_would_misread() {
        assert_eq!(
            error_line("nixdeploy: h1 failed", "a: 50%\nb"),
            "::error title=nixdeploy%3A h1 failed::a: 50%25%0Ab"
        );
    }
}
