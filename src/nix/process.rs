//! Running a local command (Nix, mostly) with its output streamed line by line.

use std::process::Stdio;

use crate::transport::capture::{capture, INTERNAL_LIMIT};
use crate::transport::Stream;
use anyhow::Context;

/// What a local command did.
#[derive(Debug, Clone, Default)]
pub struct LocalOutput {
    /// Exit status; `None` if killed by a signal.
    pub status: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// Output beyond the limit was dropped (a marker line says where).
    pub truncated: bool,
}

impl LocalOutput {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The most useful line of stderr for an error message: the last `error:` line, else the last line.
    pub fn error_line(&self) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        lines
            .iter()
            .rev()
            .find(|l| l.starts_with("error"))
            .or(lines.last())
            .map(|l| l.to_string())
            .unwrap_or_else(|| format!("exit status {:?}", self.status))
    }
}

/// Runs `argv` with extra environment, calling `on_line` for each output line as it arrives.
pub async fn run_local(
    argv: &[String],
    env: &[(String, String)],
    on_line: &(dyn Fn(Stream, &str) + Send + Sync),
) -> anyhow::Result<LocalOutput> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to start `{}`", argv[0]))?;
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    // Bytes, not lines: a non-UTF-8 line must not end the reading (and lose the error).
    let (stdout, stderr) = tokio::join!(
        capture(out, Stream::Stdout, INTERNAL_LIMIT, on_line),
        capture(err, Stream::Stderr, INTERNAL_LIMIT, on_line)
    );
    let status = child.wait().await?;
    Ok(LocalOutput {
        status: status.code(),
        stdout: stdout.text,
        stderr: stderr.text,
        truncated: stdout.truncated || stderr.truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn non_utf8_output_is_read_to_the_end() {
        let argv: Vec<String> = [
            "sh",
            "-c",
            "printf 'a\\377b\\nerror: second\\n' >&2; printf 'x\\376\\ny\\n'",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = run_local(&argv, &[], &|_, _| {}).await.unwrap();
        assert_eq!(out.stdout, "x\u{fffd}\ny\n");
        assert_eq!(out.error_line(), "error: second");
    }
}
