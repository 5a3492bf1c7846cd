//! SSH to one host: the ssh argv (pure), the multiplexed master connection, and running commands over it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::io::AsyncWriteExt;

use super::capture::{capture, INTERNAL_LIMIT};

use super::tuning::Tuning;
use crate::fleet::{Host, HostName, Inventory};

/// How long a new ssh connection may take to be established.
const CONNECT_TIMEOUT_SECS: u32 = 10;

/// How long an idle master of a run that does not persist its connections stays.
const IDLE_EXIT_SECS: u64 = 30;

/// How long a persisted master has to answer before a new one replaces it.
const RESUME_CHECK: Duration = Duration::from_secs(3);

/// Everything needed to open an ssh connection to one host.
#[derive(Debug, Clone)]
pub struct Target {
    /// The inventory name (for messages).
    pub host: HostName,
    /// The ssh destination (address or ssh config alias).
    pub destination: String,
    /// `-l USER`, when the inventory sets one.
    pub user: Option<String>,
    /// `-p PORT`, when the inventory sets one.
    pub port: Option<u16>,
    /// `-F FILE`, when the inventory has `sshConfig`.
    pub config: Option<PathBuf>,
    /// Extra ssh arguments from `sshOptions`.
    pub options: Vec<String>,
    /// The host's Nix system (`x86_64-linux`), which tells what its CPU can do.
    pub system: String,
    /// The host is this machine, reached without ssh (`local = true`).
    pub local: bool,
    /// How commands that need root are wrapped when the login is not root.
    pub escalation: super::Escalation,
}

impl Target {
    /// The target of an inventory host.
    pub fn of(host: &Host, inventory: &Inventory) -> Target {
        Target {
            host: host.name.clone(),
            destination: host.target_host.clone(),
            user: host.target_user.clone(),
            port: host.target_port,
            config: inventory.ssh_config.clone(),
            options: host.ssh_options.clone(),
            system: host.system.clone(),
            local: host.local,
            escalation: host.escalation.clone(),
        }
    }

    /// `user@destination` for messages and `ssh-ng://` store URIs.
    pub fn display(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.destination),
            None => self.destination.clone(),
        }
    }

    /// The options every ssh invocation for this host shares (config, port, user, extras).
    pub fn common_args(&self) -> Vec<String> {
        let mut args = vec!["-o".to_string(), "BatchMode=yes".to_string()];
        if let Some(config) = &self.config {
            args.push("-F".into());
            args.push(config.display().to_string());
        }
        if let Some(port) = self.port {
            args.push("-p".into());
            args.push(port.to_string());
        }
        if let Some(user) = &self.user {
            args.push("-l".into());
            args.push(user.clone());
        }
        args.extend(self.options.iter().cloned());
        args
    }

    /// The argv that starts the background master connection on `control` (a socket path);
    /// `tuning` may put faster ciphers first, after the user's own options (see [`Tuning`]).
    ///
    /// The master exits by itself once idle for [`IDLE_EXIT_SECS`], so a deployer killed outright
    /// leaves nothing behind for long; a persisted master (`persist`) waits that long instead
    /// for the next run.
    pub fn master_argv(
        &self,
        control: &Path,
        log: &Path,
        tuning: &Tuning,
        persist: Option<Duration>,
    ) -> Vec<String> {
        let idle = persist.map_or(IDLE_EXIT_SECS, |d| d.as_secs().max(1));
        let mut argv = vec![
            "ssh".to_string(),
            "-M".into(),
            "-f".into(),
            "-N".into(),
            "-S".into(),
            control.display().to_string(),
            "-E".into(),
            log.display().to_string(),
            "-o".into(),
            format!("ControlPersist={idle}"),
            "-o".into(),
            format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
            // A dead network must be noticed: three missed keepalives end the connection.
            "-o".into(),
            "ServerAliveInterval=5".into(),
            "-o".into(),
            "ServerAliveCountMax=3".into(),
        ];
        argv.extend(self.common_args());
        argv.extend(tuning.master_options());
        argv.push("--".into());
        argv.push(self.destination.clone());
        argv
    }

    /// The argv of a **brand-new** connection that runs `remote` (never the multiplexed one):
    /// used to confirm activations, where a dead network must not look alive.
    ///
    /// `tuning` may put a cheaper key exchange first (see [`Tuning`]).
    pub fn fresh_argv(
        &self,
        remote: &str,
        connect_timeout_secs: u32,
        tuning: &Tuning,
    ) -> Vec<String> {
        let mut argv = vec![
            "ssh".to_string(),
            "-o".into(),
            "ControlMaster=no".into(),
            "-o".into(),
            "ControlPath=none".into(),
            "-o".into(),
            format!("ConnectTimeout={connect_timeout_secs}"),
        ];
        // After the user's own options: ssh keeps the first value it is given.
        argv.extend(self.common_args());
        argv.extend(tuning.token_options());
        argv.push("--".into());
        argv.push(self.destination.clone());
        argv.push(remote.to_string());
        argv
    }

    /// The ssh arguments that make Nix's own ssh reuse the master on `control`.
    pub fn nix_ssh_args(&self, control: &Path) -> Vec<String> {
        let mut opts = self.common_args();
        opts.push("-o".into());
        opts.push(format!("ControlPath={}", control.display()));
        opts.push("-o".into());
        opts.push("ControlMaster=no".into());
        opts
    }

    /// Runs `remote` over a brand-new connection, with a deadline.
    pub async fn run_fresh(&self, remote: &str, timeout: Duration) -> anyhow::Result<Output> {
        self.run_fresh_input(remote, None, timeout).await
    }

    /// [`Target::run_fresh`], feeding `stdin` to the command.
    pub async fn run_fresh_input(
        &self,
        remote: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        if self.local {
            return super::local::run_fresh(remote, stdin, timeout).await;
        }
        let secs = timeout.as_secs().clamp(1, 30) as u32;
        let argv = self.fresh_argv(remote, secs, &Tuning::of(self).await);
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        super::local::output_within(cmd, stdin, timeout, &self.display()).await
    }
}

/// Which stream a line of remote output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
}

/// What a remote command did.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Exit status; `None` when the command was killed by a signal or the connection died.
    pub status: Option<i32>,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// Output beyond the limit was dropped (a marker line says where).
    pub truncated: bool,
}

impl Output {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The non-empty lines the command printed when it succeeded; otherwise an error that
    /// says what could not be done (`cannot read the profiles of h1`) and the command's last
    /// error line.
    pub fn lines_or(&self, could_not: impl FnOnce() -> String) -> anyhow::Result<Vec<String>> {
        if !self.success() {
            anyhow::bail!("{}: {}", could_not(), self.last_error_line());
        }
        Ok(self
            .stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// The last non-empty stderr line, for error messages.
    pub fn last_error_line(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
    }
}

/// An open, multiplexed ssh connection to one host, reused by every step (Nix's copies included).
pub struct Connection {
    target: Target,
    /// The multiplexed session; `None` for a local host, whose commands run here.
    session: Option<Arc<openssh::Session>>,
    control: PathBuf,
    /// How commands become root, found when the connection opened (see `privilege.rs`).
    pub(super) access: super::privilege::Access,
    /// How many commands have been started over this connection (see
    /// [`Connection::commands_started`]).
    commands: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.target.host)
            .finish()
    }
}

impl Connection {
    /// The control socket of `target` in `control_dir`: named after the host and a hash of
    /// everything that decides where the connection goes, so a persisted master is only ever
    /// reused for the same destination, login, port, config and options.
    pub fn control_path(target: &Target, control_dir: &Path) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &target.destination,
            &target.user,
            target.port,
            &target.config,
            &target.options,
        )
            .hash(&mut h);
        control_dir.join(format!("{}-{:016x}.sock", target.host, h.finish()))
    }

    /// A persisted master for `target` in `control_dir` that still carries a command to the
    /// host and back; a dead or stale one is ended and `None` returned.
    pub async fn resume(target: Target, control_dir: &Path) -> Option<Connection> {
        let control = Connection::control_path(&target, control_dir);
        if target.local || !control.exists() {
            return None;
        }
        let log = control.with_extension("log");
        let conn = Connection {
            session: Some(Arc::new(openssh::Session::resume_mux(
                control.clone().into_boxed_path(),
                Some(log.into_boxed_path()),
            ))),
            target,
            control,
            access: Default::default(),
            commands: Default::default(),
        };
        let answered = tokio::time::timeout(RESUME_CHECK, conn.run("true", None)).await;
        if matches!(answered, Ok(Ok(ref out)) if out.success()) {
            return Some(conn);
        }
        conn.close().await;
        let _ = std::fs::remove_file(&conn.control);
        None
    }

    /// Starts the master connection, with its socket in `control_dir`; it outlives the run by
    /// `persist` when given.
    pub async fn open(
        target: Target,
        control_dir: &Path,
        persist: Option<Duration>,
    ) -> anyhow::Result<Connection> {
        let control = Connection::control_path(&target, control_dir);
        if target.local {
            // Nothing to open: a local host's commands run here.
            return Ok(Connection {
                target,
                session: None,
                control,
                access: Default::default(),
                commands: Default::default(),
            });
        }
        let log = control.with_extension("log");
        let _ = std::fs::remove_file(&control);
        let argv = target.master_argv(&control, &log, &Tuning::of(&target).await, persist);
        let status = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A run that ends (or is interrupted) mid-handshake leaves no master behind: `-f`
            // puts the master in the background only once it is connected.
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|err| match err.raw_os_error() {
                Some(libc::EMFILE) | Some(libc::ENFILE) => anyhow!(
                    "cannot start ssh for {}: too many open files; raise the limit \
                     (`ulimit -n`, LimitNOFILE=) or lower --parallel",
                    target.host
                ),
                _ => anyhow!(
                    "failed to start ssh for {} (is openssh-client installed?): {err}",
                    target.host
                ),
            })?;
        if !status.success() {
            let detail = std::fs::read_to_string(&log).unwrap_or_default();
            let detail = detail
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("ssh failed")
                .trim();
            return Err(anyhow!(
                "cannot reach {} ({}): {detail}",
                target.host,
                target.display()
            ));
        }
        let session = openssh::Session::resume_mux(
            control.clone().into_boxed_path(),
            Some(log.into_boxed_path()),
        );
        Ok(Connection {
            target,
            session: Some(Arc::new(session)),
            control,
            access: Default::default(),
            commands: Default::default(),
        })
    }

    /// How this connection's commands become root.
    pub fn access(&self) -> &super::privilege::Access {
        &self.access
    }

    /// The host this connection reaches.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The environment that makes `nix copy --to ssh-ng://…` ride on this connection (see
    /// [`nix_ssh_env`]).
    pub fn nix_env(&self) -> anyhow::Result<Vec<(String, String)>> {
        // Named like the control socket, which is unique per destination and options.
        let dir = self.control.parent().unwrap_or(Path::new("/tmp"));
        let name = self
            .control
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.target.host.to_string());
        nix_ssh_env(dir, &name, &self.target.nix_ssh_args(&self.control))
    }

    /// How many commands have been started over this connection: a look at the host taken
    /// after the `n`th command still holds while this is `n`.
    pub fn commands_started(&self) -> u64 {
        self.commands.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs a shell command line (already quoted), feeding `stdin`, collecting its output.
    pub async fn run(&self, command: &str, stdin: Option<&[u8]>) -> anyhow::Result<Output> {
        self.run_streaming(command, stdin, &|_, _| {}).await
    }

    /// Like [`Connection::run`], calling `on_line` for every line as it arrives.
    pub async fn run_streaming(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        on_line: &(dyn Fn(Stream, &str) + Send + Sync),
    ) -> anyhow::Result<Output> {
        self.run_capped(command, stdin, INTERNAL_LIMIT, on_line)
            .await
    }

    /// Like [`Connection::run_streaming`], keeping at most `limit` bytes of each stream (see
    /// [`super::capture`]). Output is read as bytes; invalid UTF-8 is replaced, never a reason
    /// to stop reading.
    pub async fn run_capped(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        limit: usize,
        on_line: &(dyn Fn(Stream, &str) + Send + Sync),
    ) -> anyhow::Result<Output> {
        self.commands
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let Some(session) = &self.session else {
            return super::local::run_capped(command, stdin, limit, on_line).await;
        };
        let mut cmd = openssh::Session::to_raw_command(session.clone(), command);
        cmd.stdin(if stdin.is_some() {
            openssh::Stdio::piped()
        } else {
            openssh::Stdio::null()
        })
        .stdout(openssh::Stdio::piped())
        .stderr(openssh::Stdio::piped());
        let mut child = cmd
            .spawn()
            .await
            .map_err(|e| anyhow!("lost the connection to {}: {e}", self.target.host))?;
        let stdin_pipe = child.stdin().take();
        let feed = async {
            if let (Some(data), Some(mut pipe)) = (stdin, stdin_pipe) {
                // A command that exits without reading its input is not an error.
                let _ = pipe.write_all(data).await;
                let _ = pipe.shutdown().await;
            }
        };
        let stdout = child.stdout().take().expect("stdout is piped");
        let stderr = child.stderr().take().expect("stderr is piped");
        let read_out = capture(stdout, Stream::Stdout, limit, on_line);
        let read_err = capture(stderr, Stream::Stderr, limit, on_line);
        let ((), out, err) = tokio::join!(feed, read_out, read_err);
        let status = match child.wait().await {
            Ok(status) => status.code(),
            Err(e) if is_command_not_found(&e) => Some(127),
            Err(e) => return Err(anyhow!("lost the connection to {}: {e}", self.target.host)),
        };
        Ok(Output {
            status,
            stdout: out.text,
            stderr: err.text,
            truncated: out.truncated || err.truncated,
        })
    }

    /// Spawns a long-lived remote command whose stdin stays open (locks, heartbeats).
    pub async fn spawn_held(&self, command: &str) -> anyhow::Result<super::local::Held> {
        self.commands
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let Some(session) = &self.session else {
            return super::local::Held::local(command);
        };
        let mut cmd = openssh::Session::to_raw_command(session.clone(), command);
        cmd.stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
        cmd.spawn()
            .await
            .map(super::local::Held::ssh)
            .map_err(|e| anyhow!("lost the connection to {}: {e}", self.target.host))
    }

    /// Is the master still alive and the host answering? (A local host always is.)
    pub async fn check(&self) -> bool {
        match &self.session {
            Some(session) => session.check().await.is_ok(),
            None => true,
        }
    }

    /// Ends the master and waits until it is gone: asked over its control socket for its pid
    /// (the multiplexing protocol's alive check) and sent SIGTERM, on which ssh closes the
    /// connection and removes the socket — no process per host, as `ssh -O exit` would be. A
    /// master that cannot be asked is sent `ssh -O exit` instead.
    pub async fn close(&self) {
        if self.session.is_none() {
            return;
        }
        if self.terminate_master().await {
            return;
        }
        let mut argv = vec![
            "-S".to_string(),
            self.control.display().to_string(),
            "-O".into(),
            "exit".into(),
        ];
        argv.extend(self.target.common_args());
        argv.push("--".into());
        argv.push(self.target.destination.clone());
        let _ = tokio::process::Command::new("ssh")
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

impl Connection {
    /// SIGTERM to the master behind the control socket, then a wait (at most 2 s) for it to
    /// be gone; whether it is.
    async fn terminate_master(&self) -> bool {
        let Ok(mut mux) = openssh_mux_client::Connection::connect(&self.control).await else {
            return false;
        };
        let Ok(pid) = mux.send_alive_check().await else {
            return false;
        };
        drop(mux);
        let Ok(pid) = libc::pid_t::try_from(pid.get()) else {
            return false;
        };
        // SAFETY: kill(2) has no memory effects; the pid is the one the master answering on
        // our own private control socket reported for itself a moment ago.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return false;
        }
        for _ in 0..200 {
            if exited(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

/// Whether process `pid` has ended: gone, or a zombie (a daemonized master's parent is init,
/// which may take its time to reap it).
fn exited(pid: libc::pid_t) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// The environment for a Nix command whose own `ssh` must run with exactly `args`.
///
/// Nix splits `NIX_SSHOPTS` on whitespace and has no quoting, so an option holding a space
/// (`-o "ProxyCommand=ssh -W %h:%p jump"`, a config path with a space) would break apart.
/// Instead, a wrapper `ssh` is written to `dir/nix-ssh-<name>/` (inside nixdeploy's private
/// control directory) that runs the real ssh with `args`, each quoted by the shared helper,
/// followed by what Nix passes; `PATH` puts it first (Nix runs `ssh` from `PATH`) and
/// `NIX_SSHOPTS` is emptied so nothing is split or added.
pub fn nix_ssh_env(
    dir: &Path,
    name: &str,
    args: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let path = std::env::var_os("PATH").unwrap_or_default();
    let wrapper_dir = dir.join(format!("nix-ssh-{name}"));
    let real = std::env::split_paths(&path)
        .filter(|d| d.is_absolute() && !d.starts_with(dir))
        .map(|d| d.join("ssh"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| anyhow!("ssh is not on PATH (is openssh-client installed?)"))?;
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&wrapper_dir);
    let script = wrapper_script(&real.display().to_string(), args);
    // Written aside and renamed: a concurrent Nix never runs a half-written wrapper.
    let tmp = wrapper_dir.join(format!(".ssh.{}", std::process::id()));
    std::fs::write(&tmp, script)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700)))
        .and_then(|()| std::fs::rename(&tmp, wrapper_dir.join("ssh")))
        .with_context(|| format!("cannot write the ssh wrapper in {}", wrapper_dir.display()))?;
    let mut paths = vec![wrapper_dir];
    paths.extend(std::env::split_paths(&path));
    let joined = std::env::join_paths(paths)
        .context("a PATH entry contains `:`, so the ssh wrapper cannot be put first")?;
    Ok(vec![
        ("PATH".to_string(), joined.to_string_lossy().into_owned()),
        ("NIX_SSHOPTS".to_string(), String::new()),
    ])
}

/// `exec REAL_SSH ARGS... "$@"`, every word quoted.
fn wrapper_script(real_ssh: &str, args: &[String]) -> String {
    let mut argv = vec![real_ssh.to_string()];
    argv.extend(args.iter().cloned());
    format!(
        "#!/bin/sh\n# Nix's ssh for nixdeploy: the exact ssh options, never split on spaces.\nexec {} \"$@\"\n",
        super::command_line(&argv)
    )
}

/// The openssh crate reports a remote exit status of 127 as an error ("remote command not
/// found"); for us it is an ordinary status the caller reports.
fn is_command_not_found(err: &openssh::Error) -> bool {
    matches!(err, openssh::Error::Remote(io) if io.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            host: HostName::new("web-1"),
            destination: "10.0.0.1".into(),
            user: Some("root".into()),
            port: Some(2222),
            config: Some("/tmp/cfg".into()),
            options: vec!["-o".into(), "Compression=yes".into()],
            system: "x86_64-linux".into(),
            local: false,
            escalation: Default::default(),
        }
    }

    #[test]
    fn master_argv_multiplexes_and_keeps_user_settings() {
        let argv = target().master_argv(
            Path::new("/c/web-1.sock"),
            Path::new("/c/web-1.log"),
            &Tuning::default(),
            None,
        );
        let line = argv.join(" ");
        assert!(line.starts_with("ssh -M -f -N -S /c/web-1.sock"));
        assert!(line.contains("-F /tmp/cfg -p 2222 -l root -o Compression=yes -- 10.0.0.1"));
        assert!(line.contains("ServerAliveInterval=5"));
    }

    #[test]
    fn fresh_connection_never_uses_the_master() {
        let argv = target().fresh_argv("true", 5, &Tuning::default());
        let line = argv.join(" ");
        assert!(line.contains("ControlMaster=no"));
        assert!(line.contains("ControlPath=none"));
        assert!(line.ends_with("-- 10.0.0.1 true"));
    }

    #[test]
    fn tuning_options_follow_the_users_own() {
        let tuning = Tuning {
            classic_kex_for_tokens: true,
            aes_gcm: true,
        };
        let master = target()
            .master_argv(Path::new("/c/s"), Path::new("/c/l"), &tuning, None)
            .join(" ");
        assert!(master.contains("-o Compression=yes -o Ciphers=^aes256-gcm@openssh.com"));
        let fresh = target().fresh_argv("true", 5, &tuning).join(" ");
        assert!(fresh.contains("-o KexAlgorithms=^curve25519-sha256,"));
    }

    #[test]
    fn nix_ssh_args_point_at_the_master() {
        let opts = target().nix_ssh_args(Path::new("/c/web-1.sock")).join(" ");
        assert!(opts.contains("ControlPath=/c/web-1.sock"));
        assert!(opts.contains("-F /tmp/cfg"));
    }

    /// The wrapper really runs ssh with each option intact: `ssh -G` prints the configuration
    /// an invocation would use, without connecting.
    #[test]
    fn options_with_spaces_reach_nix_ssh_whole() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_dir = dir.path().join("my configs");
        std::fs::create_dir(&cfg_dir).unwrap();
        let cfg = cfg_dir.join("ssh config");
        std::fs::write(&cfg, "Host web-1\n  HostName 10.9.9.9\n").unwrap();
        let mut t = target();
        t.config = Some(cfg);
        t.options = vec!["-o".into(), "ServerAliveInterval 7".into()];
        let env = nix_ssh_env(dir.path(), "web-1", &t.nix_ssh_args(Path::new("/c/s"))).unwrap();
        assert_eq!(env[1], ("NIX_SSHOPTS".to_string(), String::new()));
        let out = std::process::Command::new("ssh")
            .env("PATH", &env[0].1)
            .args(["-G", "web-1"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("serveraliveinterval 7"), "{text}");
        assert!(text.contains("hostname 10.9.9.9"), "{text}");
        assert!(text.contains("controlpath /c/s"), "{text}");
    }
}
