//! Running commands as root over a non-root login: the escalation probe made when a connection
//! opens (so a host whose sudo would prompt fails before anything changes on it) and the
//! escalated `run` and `spawn_held`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};

use super::escalate::{Escalation, Feed, Secret, Tool};
use super::{Connection, Output};

/// How long an escalation probe may take (a tool that prompts anyway must not hang the run).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How a connection's commands become root, as found by [`probe`].
#[derive(Debug, Clone, Default)]
pub enum Access {
    /// The login is root (or escalation is switched off): commands run as they are.
    #[default]
    Direct,
    /// The tool lets the login in without a password.
    NoPassword(Escalation),
    /// The tool wants the password, which nixdeploy feeds over stdin.
    Password(Escalation, Arc<Secret>),
}

impl Access {
    /// The command line that runs `script` as root.
    pub fn command(&self, script: &str) -> String {
        match self {
            Access::Direct => script.to_string(),
            Access::NoPassword(e) => e.wrap(script, Feed::NoPassword),
            Access::Password(e, _) => e.wrap(script, Feed::Password),
        }
    }

    /// The stdin of an escalated command whose own input is `stdin`: the password line first
    /// when the tool reads one.
    pub fn stdin(&self, stdin: Option<&[u8]>) -> Option<Secret> {
        match self {
            Access::Password(_, password) => Some(password.line_then(stdin)),
            _ => stdin.map(|s| Secret::new(s.to_vec())),
        }
    }
}

/// Finds out how `conn` escalates: without a password, with `password`, or not at all (an error
/// that says what to configure). Runs nothing that changes the host.
pub async fn probe(conn: &Connection, password: Option<&Arc<Secret>>) -> anyhow::Result<Access> {
    let escalation = conn.target().escalation.clone();
    if escalation.is_none() {
        return Ok(Access::Direct);
    }
    let host = conn.target().host.clone();
    let login = conn
        .target()
        .user
        .clone()
        .unwrap_or_else(|| "the login".into());
    let tool = escalation.name().to_string();
    let out = timed(conn.run(&escalation.probe_without_password(), None), &tool).await?;
    if out.success() {
        return Ok(Access::NoPassword(escalation));
    }
    let why = out.stderr.trim().to_string();
    if !asks_for_password(&why) {
        bail!(
            "cannot run commands as root on {host}: `{tool}` refused {login}: {}; allow {login} \
             to run commands as root with `{tool}` (see docs/non-root.md), or set \
             privilegeEscalation = [ ] if this host needs no root",
            last_line(&why)
        );
    }
    if !escalation.reads_password_from_stdin() {
        let rule = match escalation.tool() {
            Tool::Doas => format!("`permit nopass {login} as root` in /etc/doas.conf"),
            _ => format!("a rule that lets {login} in without a password"),
        };
        bail!(
            "cannot run commands as root on {host}: `{tool}` asks {login} for a password, which \
             it reads only from a terminal (--ask-sudo-password works with sudo only); add {rule}, \
             or use sudo (see docs/non-root.md)"
        );
    }
    let Some(password) = password else {
        bail!(
            "cannot run commands as root on {host}: sudo asks {login} for a password; pass \
             --ask-sudo-password (REPL: ask_sudo_password()) to type it once for the whole run, \
             or give {login} a NOPASSWD sudo rule (see docs/non-root.md)"
        );
    };
    let access = Access::Password(escalation, password.clone());
    let stdin = access.stdin(None);
    let command = access.command("true");
    let check = conn.run(&command, stdin.as_ref().map(Secret::expose));
    let out = timed(check, &tool).await?;
    if out.success() {
        return Ok(access);
    }
    let why = out.stderr.trim();
    if why.contains("incorrect password") || why.contains("Sorry, try again") {
        bail!("cannot run commands as root on {host}: sudo: incorrect password for {login}");
    }
    bail!(
        "cannot run commands as root on {host}: sudo refused {login}: {}",
        last_line(why)
    )
}

async fn timed(
    run: impl std::future::Future<Output = anyhow::Result<Output>>,
    tool: &str,
) -> anyhow::Result<Output> {
    tokio::time::timeout(PROBE_TIMEOUT, run)
        .await
        .map_err(|_| {
            anyhow!(
                "`{tool}` did not answer within {}s (is it waiting for a password on a terminal?)",
                PROBE_TIMEOUT.as_secs()
            )
        })?
}

/// Whether a non-interactive escalation failed only because it wanted a password.
fn asks_for_password(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("password is required")
        || s.contains("authentication required")
        || s.contains("interactive authentication")
        || s.contains("a terminal is required")
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
}

impl super::Target {
    /// Runs `script` as root over a brand-new connection (see [`super::Target::run_fresh`]),
    /// through `access` as found when the host was first connected to.
    pub async fn run_fresh_root(
        &self,
        access: &Access,
        script: &str,
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        let input = access.stdin(None);
        self.run_fresh_input(
            &access.command(script),
            input.as_ref().map(Secret::expose),
            timeout,
        )
        .await
    }
}

impl Connection {
    /// Runs `script` as root (escalated when the login is not root), feeding `stdin`.
    pub async fn run_root(&self, script: &str, stdin: Option<&[u8]>) -> anyhow::Result<Output> {
        let access = self.access();
        let input = access.stdin(stdin);
        self.run(&access.command(script), input.as_ref().map(Secret::expose))
            .await
    }

    /// Like [`Connection::run_streaming`], as root.
    pub async fn run_root_streaming(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        on_line: &(dyn Fn(super::Stream, &str) + Send + Sync),
    ) -> anyhow::Result<Output> {
        let access = self.access();
        let input = access.stdin(stdin);
        self.run_streaming(
            &access.command(script),
            input.as_ref().map(Secret::expose),
            on_line,
        )
        .await
    }

    /// Like [`Connection::run_capped`], as root.
    pub async fn run_root_capped(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        limit: usize,
        on_line: &(dyn Fn(super::Stream, &str) + Send + Sync),
    ) -> anyhow::Result<Output> {
        let access = self.access();
        let input = access.stdin(stdin);
        self.run_capped(
            &access.command(script),
            input.as_ref().map(Secret::expose),
            limit,
            on_line,
        )
        .await
    }

    /// Like [`Connection::spawn_held`], as root; the password (if any) is already written to
    /// the held stdin when this returns.
    pub async fn spawn_held_root(&self, script: &str) -> anyhow::Result<super::local::Held> {
        use tokio::io::AsyncWriteExt;
        let access = self.access();
        let mut child = self.spawn_held(&access.command(script)).await?;
        if let (Some(line), Some(stdin)) = (access.stdin(None), child.stdin().as_mut()) {
            stdin
                .write_all(line.expose())
                .await
                .map_err(|e| anyhow!("lost the connection to {}: {e}", self.target().host))?;
        }
        Ok(child)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_password_prompt_counts_as_asking_for_one() {
        assert!(asks_for_password("sudo: a password is required"));
        assert!(asks_for_password("doas: Authentication required"));
        assert!(!asks_for_password("deploy is not in the sudoers file."));
    }

    #[test]
    fn a_password_access_puts_the_password_line_before_the_input() {
        let e = Escalation::for_login(Some("deploy"), None);
        let access = Access::Password(e, Arc::new(Secret::new(b"pw".to_vec())));
        assert_eq!(access.stdin(Some(b"x")).unwrap().expose(), b"pw\nx");
        assert!(access.command("true").starts_with("sudo -k -S -p ''"));
        assert!(Access::Direct.stdin(None).is_none());
    }
}
