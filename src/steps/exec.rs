//! `exec`: run a command on hosts, streaming each line live with the host's name, collecting the output.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use super::{fan_out, HostResult, Outcome};
use crate::context::Context;
use crate::fleet::Host;
use crate::report::Event;
use crate::transport::{quote, Stream};

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// The command only reads: it runs for real in a dry run.
    pub read_only: bool,
    /// Give up after this long.
    pub timeout: Option<Duration>,
    /// Bytes fed to the command's stdin.
    pub stdin: Option<Vec<u8>>,
    /// Do not stream the output lines to the terminal.
    pub quiet: bool,
    /// Bytes kept of each stream (head and tail); `None` is
    /// [`crate::transport::capture::DEFAULT_EXEC_LIMIT`].
    pub max_output: Option<usize>,
}

/// What a command did on one host.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Executed {
    /// Exit status (`-1` when killed or the connection dropped).
    pub status: i64,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// Output beyond `max_output` bytes per stream was dropped (a marker line says where).
    pub truncated: bool,
}

/// Runs `command` (a shell command line) on every host.
pub async fn exec(
    ctx: &Arc<Context>,
    hosts: &[Arc<Host>],
    command: &str,
    opts: ExecOptions,
) -> Vec<HostResult<Executed>> {
    let command = command.to_string();
    let c = ctx.clone();
    fan_out(ctx, hosts, "exec", move |host| {
        let (ctx, command, opts) = (c.clone(), command.clone(), opts.clone());
        async move { exec_one(&ctx, &host, &command, &opts).await }
    })
    .await
}

/// A per-command file on the host that records the command's ssh session id.
fn session_file() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("/run/nixdeploy/exec-{}-{nanos:x}.sid", std::process::id())
}

/// Runs `command` in a subshell after recording the session id (sshd makes every channel's
/// shell a session leader), so [`stop`] can end everything the command started.
fn wrapped(command: &str, pidfile: &str) -> String {
    let pf = quote(pidfile);
    format!("mkdir -p /run/nixdeploy 2>/dev/null; echo $$ > {pf} 2>/dev/null; (\n{command}\n); rc=$?; rm -f {pf}; exit $rc")
}

/// Ends every process of a command started by [`wrapped`].
fn stop(pidfile: &str) -> String {
    let pf = quote(pidfile);
    format!("s=$(cat {pf} 2>/dev/null) && [ -n \"$s\" ] && pkill -TERM -s \"$s\"; rm -f {pf}; true")
}

async fn exec_one(
    ctx: &Context,
    host: &Host,
    command: &str,
    opts: &ExecOptions,
) -> anyhow::Result<Outcome<Executed>> {
    if ctx.options.dry_run && !opts.read_only {
        return Ok(Outcome::planned(
            Executed::default(),
            format!("would run: {command}"),
        ));
    }
    let conn = ctx.pool.get(&ctx.target(host)).await?;
    let name = host.name.clone();
    let reporter = ctx.reporter.clone();
    let quiet = opts.quiet;
    let on_line = move |stream: Stream, line: &str| {
        if !quiet {
            reporter.emit(Event::Log {
                host: Some(name.clone()),
                step: "exec".into(),
                stream: if stream == Stream::Stdout {
                    "stdout"
                } else {
                    "stderr"
                },
                line: line.to_string(),
            });
        }
    };
    let pidfile = session_file();
    let script = wrapped(command, &pidfile);
    let limit = opts
        .max_output
        .unwrap_or(crate::transport::capture::DEFAULT_EXEC_LIMIT);
    let run = conn.run_capped(&script, opts.stdin.as_deref(), limit, &on_line);
    let deadline = opts.timeout.unwrap_or(Duration::from_secs(u64::MAX / 4));
    // Closing an ssh channel does not end the command on the host: stop it ourselves when the
    // run is aborted or the timeout passes.
    let out = tokio::select! {
        r = tokio::time::timeout(deadline, run) => match r {
            Ok(out) => out?,
            Err(_) => {
                let _ = conn.run(&stop(&pidfile), None).await;
                bail!("`{command}` did not finish within {}s and was stopped", deadline.as_secs());
            }
        },
        _ = super::aborted(&ctx.interrupt) => {
            let _ = conn.run(&stop(&pidfile), None).await;
            bail!("aborted by a second interrupt; `{command}` was stopped");
        }
    };
    let executed = Executed {
        status: out.status.map(i64::from).unwrap_or(-1),
        stdout: out.stdout,
        stderr: out.stderr,
        truncated: out.truncated,
    };
    if executed.truncated {
        ctx.reporter.message(
            crate::report::Level::Warn,
            format!(
                "{}: `{command}` wrote more than {limit} bytes on a stream; the middle was dropped (see `max_output`)",
                host.name
            ),
        );
    }
    if executed.status == 0 {
        Ok(Outcome::done(executed))
    } else {
        // The command ran; its failure is data the runbook reads, so the step reports it as a value.
        let status = executed.status;
        Ok(Outcome {
            value: executed,
            state: crate::report::StepState::Failed,
            message: Some(format!("exit status {status}")),
        })
    }
}
