//! Running a local command (Nix, mostly) with its output streamed line by line.

use std::process::Stdio;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::transport::Stream;

/// What a local command did.
#[derive(Debug, Clone, Default)]
pub struct LocalOutput {
    /// Exit status; `None` if killed by a signal.
    pub status: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
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
    let read = |r: Box<dyn tokio::io::AsyncRead + Unpin + Send>, s: Stream| async move {
        let mut all = String::new();
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            on_line(s, &line);
            all.push_str(&line);
            all.push('\n');
        }
        all
    };
    let (stdout, stderr) = tokio::join!(
        read(Box::new(out), Stream::Stdout),
        read(Box::new(err), Stream::Stderr)
    );
    let status = child.wait().await?;
    Ok(LocalOutput {
        status: status.code(),
        stdout,
        stderr,
    })
}
