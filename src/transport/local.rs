//! Reaching the machine nixdeploy runs on without ssh (a host marked `local`): the same
//! commands, run by `sh -c` here, so every step (locks, keys, the activation watchdog and its
//! confirmation) works unchanged.

use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::capture::capture;
use super::ssh::{Output, Stream};

fn shell(command: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(command).kill_on_drop(false);
    cmd
}

/// Runs a shell command line here, feeding `stdin`, calling `on_line` for every line and
/// keeping at most `limit` bytes of each stream.
pub async fn run_capped(
    command: &str,
    stdin: Option<&[u8]>,
    limit: usize,
    on_line: &(dyn Fn(Stream, &str) + Send + Sync),
) -> anyhow::Result<Output> {
    let mut child = shell(command)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to start sh for a local host")?;
    let stdin_pipe = child.stdin.take();
    let feed = async {
        if let (Some(data), Some(mut pipe)) = (stdin, stdin_pipe) {
            // A command that exits without reading its input is not an error.
            let _ = pipe.write_all(data).await;
            let _ = pipe.shutdown().await;
        }
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let read_out = capture(stdout, Stream::Stdout, limit, on_line);
    let read_err = capture(stderr, Stream::Stderr, limit, on_line);
    let ((), out, err) = tokio::join!(feed, read_out, read_err);
    let status = child.wait().await.context("lost a local command")?;
    Ok(Output {
        status: status.code(),
        stdout: out.text,
        stderr: err.text,
        truncated: out.truncated || err.truncated,
    })
}

/// Runs a command here with a deadline: what a brand-new connection is for a local host.
pub async fn run_fresh(
    command: &str,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Output> {
    output_within(shell(command), stdin, timeout, "a local command").await
}

/// Runs `cmd` to the end, feeding it `stdin`, within `timeout` (`what` names it in the error);
/// a command that exits without reading its input is not an error.
pub(super) async fn output_within(
    mut cmd: tokio::process::Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let run = async {
        let mut child = cmd.spawn()?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let _ = pipe.write_all(data).await;
        }
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| anyhow!("no answer from {what} within {}s", timeout.as_secs()))?
        .map_err(|err| anyhow!("failed to run the command for {what}: {err}"))?;
    Ok(Output {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        truncated: false,
    })
}

/// A long-lived command whose stdin stays open (locks, heartbeats), over ssh or here.
pub enum Held {
    /// Over the host's ssh connection.
    Ssh(
        openssh::Child<std::sync::Arc<openssh::Session>>,
        Option<HeldOut>,
        Option<HeldIn>,
    ),
    /// On this machine.
    Local(tokio::process::Child, Option<HeldOut>, Option<HeldIn>),
}

impl Held {
    /// Wraps a remote child, taking its pipes.
    pub fn ssh(mut child: openssh::Child<std::sync::Arc<openssh::Session>>) -> Held {
        let out = child.stdout().take().map(HeldOut::Ssh);
        let input = child.stdin().take().map(HeldIn::Ssh);
        Held::Ssh(child, out, input)
    }

    /// Starts `command` here with piped stdin and stdout.
    pub fn local(command: &str) -> anyhow::Result<Held> {
        let mut child = shell(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("failed to start sh for a local host")?;
        let out = child.stdout.take().map(HeldOut::Local);
        let input = child.stdin.take().map(HeldIn::Local);
        Ok(Held::Local(child, out, input))
    }

    /// The command's stdout, until taken.
    pub fn stdout(&mut self) -> &mut Option<HeldOut> {
        match self {
            Held::Ssh(_, out, _) | Held::Local(_, out, _) => out,
        }
    }

    /// The command's stdin, until taken.
    pub fn stdin(&mut self) -> &mut Option<HeldIn> {
        match self {
            Held::Ssh(_, _, input) | Held::Local(_, _, input) => input,
        }
    }

    /// The command's stderr, until taken; a local command's goes nowhere (`None`).
    pub fn take_stderr(&mut self) -> Option<HeldOut> {
        match self {
            Held::Ssh(child, _, _) => child.stderr().take().map(HeldOut::SshErr),
            Held::Local(..) => None,
        }
    }

    /// Waits for the command to end.
    pub async fn wait(self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Held::Ssh(child, _, _) => child.wait().await.map_err(std::io::Error::other),
            Held::Local(mut child, _, _) => child.wait().await,
        }
    }
}

/// The stdout (or remote stderr) of a [`Held`] command.
pub enum HeldOut {
    /// Remote.
    Ssh(openssh::ChildStdout),
    /// Remote stderr.
    SshErr(openssh::ChildStderr),
    /// Local.
    Local(tokio::process::ChildStdout),
}

/// The stdin of a [`Held`] command.
pub enum HeldIn {
    /// Remote.
    Ssh(openssh::ChildStdin),
    /// Local.
    Local(tokio::process::ChildStdin),
}

impl AsyncRead for HeldOut {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            HeldOut::Ssh(s) => Pin::new(s).poll_read(cx, buf),
            HeldOut::SshErr(s) => Pin::new(s).poll_read(cx, buf),
            HeldOut::Local(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HeldIn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            HeldIn::Ssh(s) => Pin::new(s).poll_write(cx, buf),
            HeldIn::Local(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            HeldIn::Ssh(s) => Pin::new(s).poll_flush(cx),
            HeldIn::Local(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            HeldIn::Ssh(s) => Pin::new(s).poll_shutdown(cx),
            HeldIn::Local(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    #[tokio::test]
    async fn local_commands_get_stdin_and_report_their_status() {
        let limit = super::super::capture::INTERNAL_LIMIT;
        let out = run_capped(
            "read x; echo \"got $x\"; exit 3",
            Some(b"hi\n"),
            limit,
            &|_, _| {},
        )
        .await
        .unwrap();
        assert_eq!(out.stdout, "got hi\n");
        assert_eq!(out.status, Some(3));
        let out = run_fresh("echo fresh", None, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(out.success());
    }

    #[tokio::test]
    async fn a_held_local_command_talks_over_its_pipes() {
        let mut held = Held::local("echo ready; read line; echo \"$line\" >&2").unwrap();
        let out = held.stdout().take().unwrap();
        let mut lines = BufReader::new(out).lines();
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
        let mut input = held.stdin().take().unwrap();
        input.write_all(b"bye\n").await.unwrap();
    }
}
