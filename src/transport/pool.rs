//! The connection pool: at most one multiplexed connection per host, opened on first use and
//! shared by every step; opened a few at a time, retried when the failure looks transient, and
//! optionally kept warm for the next run (persisted masters).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::sync::{OnceCell, Semaphore};

use super::{Access, Connection, Secret, Target};
use crate::fleet::HostName;

type Slot = Arc<OnceCell<Arc<Connection>>>;

/// At most this many ssh handshakes are in flight through one front door (a host reached
/// directly, or a bastion that hosts share), whatever `--parallel` says: sshd's default
/// `MaxStartups 10:30:100` starts dropping unauthenticated connections past 10.
pub const MAX_HANDSHAKES: usize = 10;

/// At most this many handshakes are in flight in all, whatever `--parallel` says: each is an
/// ssh client process doing a key exchange on this machine.
pub const MAX_HANDSHAKES_IN_ALL: usize = 64;

/// How many times a connection that failed in a way that may pass is tried in all.
const ATTEMPTS: u32 = 3;

/// How the pool opens and keeps connections.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Handshakes in flight at once in all (`--parallel`, capped at
    /// [`MAX_HANDSHAKES_IN_ALL`]; through one front door, at most [`MAX_HANDSHAKES`]).
    pub parallel: usize,
    /// Keep masters this long after the run, in the state directory, for the next run to
    /// reuse (`None`: close them at the end, in a throwaway directory).
    pub persist: Option<Duration>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            parallel: MAX_HANDSHAKES,
            persist: None,
        }
    }
}

/// Where the control sockets live.
enum ControlDir {
    /// A private directory removed with the pool.
    Temporary(tempfile::TempDir),
    /// `state_dir()/ssh`, kept across runs (mode 0700, owned by us).
    Persistent(PathBuf),
}

/// Open connections by host. A failed connection is not remembered: the next step that needs
/// the host tries again (except after a failed [`Pool::warm`], whose failure the next step
/// reports once instead of paying the host's timeouts again).
pub struct Pool {
    dir: ControlDir,
    slots: Mutex<HashMap<HostName, Slot>>,
    handshakes: Semaphore,
    /// Handshakes in flight per front door (see [`super::tuning::Resolved::front_door`]).
    doors: Mutex<HashMap<String, Arc<Semaphore>>>,
    persist: Option<Duration>,
    /// The sudo password of this run (`--ask-sudo-password`), fed to every escalated command.
    password: Mutex<Option<Arc<Secret>>>,
    /// How each host's commands became root when it was last connected to, for the brand-new
    /// connections that confirm activations while the pooled one may be gone.
    accesses: Mutex<HashMap<HostName, Access>>,
    /// Why a [`Pool::warm`] failed, by host: the next [`Pool::get`] reports it instead of
    /// trying again at once (an unreachable host costs its timeouts once, not twice).
    warm_failures: Mutex<HashMap<HostName, String>>,
    /// Set by [`Pool::close_all`]: a handshake that finishes after it closes its connection
    /// at once instead of leaving a master to idle out.
    closed: std::sync::atomic::AtomicBool,
}

impl Pool {
    /// A pool whose control sockets live in a fresh private directory under `/tmp`
    /// (socket paths must stay short), closed at the end of the run.
    pub fn new() -> anyhow::Result<Pool> {
        Pool::with_options(PoolOptions::default())
    }

    /// A pool shaped by `opts`.
    pub fn with_options(opts: PoolOptions) -> anyhow::Result<Pool> {
        let dir = match opts.persist {
            Some(_) => ControlDir::Persistent(persistent_dir()?),
            None => ControlDir::Temporary(
                tempfile::Builder::new()
                    .prefix("nixdeploy-")
                    .tempdir_in("/tmp")?,
            ),
        };
        Ok(Pool {
            dir,
            slots: Mutex::new(HashMap::new()),
            handshakes: Semaphore::new(opts.parallel.clamp(1, MAX_HANDSHAKES_IN_ALL)),
            doors: Mutex::new(HashMap::new()),
            persist: opts.persist,
            password: Mutex::new(None),
            accesses: Mutex::new(HashMap::new()),
            warm_failures: Mutex::new(HashMap::new()),
            closed: Default::default(),
        })
    }

    /// Where the control sockets are.
    pub fn dir(&self) -> &Path {
        match &self.dir {
            ControlDir::Temporary(t) => t.path(),
            ControlDir::Persistent(p) => p,
        }
    }

    /// Whether masters outlive the run.
    pub fn persists(&self) -> bool {
        self.persist.is_some()
    }

    fn slot(&self, host: &HostName) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(host.clone()).or_default().clone()
    }

    /// The connection to `target`, opening it if this is the first use (or the last try failed).
    pub async fn get(&self, target: &Target) -> anyhow::Result<Arc<Connection>> {
        let slot = self.slot(&target.host);
        slot.get_or_try_init(|| async {
            let warmed = self.warm_failures.lock().unwrap().remove(&target.host);
            if let Some(why) = warmed {
                return Err(anyhow!(why));
            }
            self.open(target).await.map(Arc::new)
        })
        .await
        .cloned()
    }

    /// Opens the connection to `target` ahead of its first use (a deploy does this while the
    /// host is built), so the handshake is not on the host's path. A failure is kept for the
    /// next [`Pool::get`], which reports it without trying again.
    pub async fn warm(&self, target: &Target) {
        let slot = self.slot(&target.host);
        let _ = slot
            .get_or_try_init(|| async {
                let opened = self.open(target).await.map(Arc::new);
                if let Err(e) = &opened {
                    let mut failures = self.warm_failures.lock().unwrap();
                    failures.insert(target.host.clone(), format!("{e:#}"));
                }
                opened
            })
            .await;
    }

    /// Opens a connection and finds out how its commands become root, before anything else
    /// runs on the host (a host whose escalation would prompt fails here).
    async fn open(&self, target: &Target) -> anyhow::Result<Connection> {
        let mut conn = self.connect(target).await?;
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            conn.close().await;
            bail!("the connection pool is closed");
        }
        let password = self.password.lock().unwrap().clone();
        match super::privilege::probe(&conn, password.as_ref()).await {
            Ok(access) => {
                self.accesses
                    .lock()
                    .unwrap()
                    .insert(target.host.clone(), access.clone());
                conn.access = access;
                Ok(conn)
            }
            Err(e) => {
                conn.close().await;
                Err(e)
            }
        }
    }

    /// Connects: reuses a persisted master that still answers, otherwise starts one, at most
    /// [`MAX_HANDSHAKES`] at once through one front door, retrying failures that may pass with
    /// a backoff.
    async fn connect(&self, target: &Target) -> anyhow::Result<Connection> {
        let closed = |_| anyhow!("the connection pool is closed");
        if self.persist.is_some() {
            // A round trip over a kept master: no handshake, so no front door to wait at.
            let _permit = self.handshakes.acquire().await.map_err(closed)?;
            if let Some(conn) = Connection::resume(target.clone(), self.dir()).await {
                return Ok(conn);
            }
        }
        if target.local {
            // A local host's commands run here: no handshake at all.
            return Connection::open(target.clone(), self.dir(), self.persist).await;
        }
        let door = self.door(target).await;
        let _door = door.acquire().await.map_err(closed)?;
        let _permit = self.handshakes.acquire().await.map_err(closed)?;
        let mut delay = Duration::from_millis(300);
        let mut attempt = 1;
        loop {
            match Connection::open(target.clone(), self.dir(), self.persist).await {
                Ok(conn) => return Ok(conn),
                Err(err) if attempt < ATTEMPTS && is_transient(&format!("{err:#}")) => {
                    tokio::time::sleep(delay).await;
                    delay *= 3;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The handshake limit of the sshd that `target`'s handshakes meet first.
    async fn door(&self, target: &Target) -> Arc<Semaphore> {
        let door = super::tuning::Resolved::of(target).await.front_door;
        let mut doors = self.doors.lock().unwrap_or_else(|e| e.into_inner());
        doors
            .entry(door)
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_HANDSHAKES)))
            .clone()
    }

    /// Drops the cached connection of `target` (closing it) without opening another: the next
    /// [`Pool::get`] opens a new one. For a host that is about to go away (a reboot).
    pub async fn forget(&self, target: &Target) {
        let old = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.remove(&target.host)
        };
        if let Some(conn) = old.as_ref().and_then(|s| s.get()) {
            conn.close().await;
        }
    }

    /// Sets the sudo password for every later escalated command (hosts that failed for want
    /// of it are tried again on their next use: failures are not cached).
    pub fn set_sudo_password(&self, password: Secret) {
        *self.password.lock().unwrap() = Some(Arc::new(password));
        self.warm_failures.lock().unwrap().clear();
    }

    /// How `host`'s commands become root, as found when it was last connected to (`Direct`
    /// before that).
    pub fn access(&self, host: &HostName) -> Access {
        self.accesses
            .lock()
            .unwrap()
            .get(host)
            .cloned()
            .unwrap_or_default()
    }

    /// Drops the cached connection of `target` and opens a new one.
    pub async fn reconnect(&self, target: &Target) -> anyhow::Result<Arc<Connection>> {
        let old = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.insert(target.host.clone(), Slot::default())
        };
        if let Some(conn) = old.as_ref().and_then(|s| s.get()) {
            conn.close().await;
        }
        self.get(target).await
    }

    /// Ends the run's connections, all at once (see [`Connection::close`]); persisted masters
    /// are left running for the next run and exit by themselves when idle.
    pub async fn close_all(&self) {
        if self.persists() {
            return;
        }
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let slots: Vec<Slot> = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut closing = tokio::task::JoinSet::new();
        for slot in slots {
            if let Some(conn) = slot.get() {
                let conn = conn.clone();
                closing.spawn(async move { conn.close().await });
            }
        }
        while closing.join_next().await.is_some() {}
    }
}

/// Failures worth another try: the network or sshd's `MaxStartups` dropping the handshake.
/// A refused login, an unknown or changed host key, or a bad name fail at once.
fn is_transient(message: &str) -> bool {
    const FINAL: [&str; 6] = [
        "Permission denied",
        "Host key verification failed",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "Could not resolve hostname",
        "Bad configuration option",
        "too many open files",
    ];
    const TRANSIENT: [&str; 6] = [
        "kex_exchange_identification",
        "Connection reset",
        "Connection closed by",
        "Connection timed out",
        "Operation timed out",
        "banner exchange",
    ];
    !FINAL.iter().any(|f| message.contains(f)) && TRANSIENT.iter().any(|t| message.contains(t))
}

/// `state_dir()/ssh`: created mode 0700; refused when it is a link or not ours alone, since a
/// socket there is a logged-in session to a host.
fn persistent_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let dir = crate::paths::state_dir().join("ssh");
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(&dir)
        .with_context(|| format!("cannot inspect {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    anyhow::ensure!(
        meta.is_dir() && meta.uid() == me && meta.permissions().mode() & 0o077 == 0,
        "{} must be a directory owned by uid {me} with mode 0700 (it holds live ssh sessions); \
         fix or remove it, or pass --no-persist",
        dir.display()
    );
    Ok(dir)
}

/// Ends every persisted master in the state directory (`nixdeploy disconnect`); returns how
/// many were ended.
pub async fn disconnect_all() -> anyhow::Result<usize> {
    let dir = crate::paths::state_dir().join("ssh");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut ended = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("sock") {
            continue;
        }
        let status = tokio::process::Command::new("ssh")
            .arg("-S")
            .arg(&path)
            .args(["-O", "exit", "nixdeploy-persisted"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await;
        if status.is_ok_and(|s| s.success()) {
            ended += 1;
        }
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(path.with_extension("log"));
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_handshakes_are_retried_but_refusals_are_not() {
        assert!(is_transient(
            "cannot reach h1: kex_exchange_identification: read: Connection reset by peer"
        ));
        assert!(is_transient(
            "ssh: connect to host 10.0.0.1 port 22: Connection timed out"
        ));
        assert!(!is_transient("root@h1: Permission denied (publickey)."));
        assert!(!is_transient("Host key verification failed."));
        assert!(!is_transient(
            "ssh: connect to host h1 port 22: Connection refused"
        ));
    }
}
