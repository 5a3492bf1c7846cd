//! The connection pool: at most one multiplexed connection per host, opened on first use and shared by every step.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::anyhow;
use tokio::sync::OnceCell;

use super::{Access, Connection, Secret, Target};
use crate::fleet::HostName;

type Slot = Arc<OnceCell<Result<Arc<Connection>, String>>>;

/// Open connections by host. A host that could not be reached stays failed for the rest of the
/// run (every later step reports the same error at once) until [`Pool::reconnect`].
pub struct Pool {
    dir: tempfile::TempDir,
    slots: Mutex<HashMap<HostName, Slot>>,
    /// The sudo password of this run (`--ask-sudo-password`), fed to every escalated command.
    password: Mutex<Option<Arc<Secret>>>,
    /// How each host's commands became root when it was last connected to, for the brand-new
    /// connections that confirm activations while the pooled one may be gone.
    accesses: Mutex<HashMap<HostName, Access>>,
}

impl Pool {
    /// A pool whose control sockets live in a fresh private directory under `/tmp`
    /// (socket paths must stay short).
    pub fn new() -> anyhow::Result<Pool> {
        let dir = tempfile::Builder::new()
            .prefix("nixdeploy-")
            .tempdir_in("/tmp")?;
        Ok(Pool {
            dir,
            slots: Mutex::new(HashMap::new()),
            password: Mutex::new(None),
            accesses: Mutex::new(HashMap::new()),
        })
    }

    /// Where the control sockets are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn slot(&self, host: &HostName) -> Slot {
        let mut slots = self.slots.lock().unwrap();
        slots.entry(host.clone()).or_default().clone()
    }

    /// The connection to `target`, opening it if this is the first use.
    pub async fn get(&self, target: &Target) -> anyhow::Result<Arc<Connection>> {
        let slot = self.slot(&target.host);
        let result = slot
            .get_or_init(|| async {
                self.open(target)
                    .await
                    .map(Arc::new)
                    .map_err(|e| format!("{e:#}"))
            })
            .await;
        result.clone().map_err(|e| anyhow!(e))
    }

    /// Opens a connection and finds out how its commands become root, before anything else
    /// runs on the host (a host whose escalation would prompt fails here).
    async fn open(&self, target: &Target) -> anyhow::Result<Connection> {
        let mut conn = Connection::open(target.clone(), self.dir.path()).await?;
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

    /// Sets the sudo password for every later escalated command; hosts that failed before
    /// (for want of it) are tried again on their next use.
    pub fn set_sudo_password(&self, password: Secret) {
        *self.password.lock().unwrap() = Some(Arc::new(password));
        let mut slots = self.slots.lock().unwrap();
        slots.retain(|_, slot| !matches!(slot.get(), Some(Err(_))));
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

    /// Whether a sudo password was given.
    pub fn has_sudo_password(&self) -> bool {
        self.password.lock().unwrap().is_some()
    }

    /// Drops the cached connection (or failure) of `target` and opens a new one.
    pub async fn reconnect(&self, target: &Target) -> anyhow::Result<Arc<Connection>> {
        let old = {
            let mut slots = self.slots.lock().unwrap();
            slots.insert(target.host.clone(), Slot::default())
        };
        if let Some(Ok(conn)) = old.as_ref().and_then(|s| s.get()) {
            conn.close().await;
        }
        self.get(target).await
    }

    /// Closes every open connection, all at once (each close is an `ssh -O exit`).
    pub async fn close_all(&self) {
        let slots: Vec<Slot> = self.slots.lock().unwrap().values().cloned().collect();
        let mut closing = tokio::task::JoinSet::new();
        for slot in slots {
            if let Some(Ok(conn)) = slot.get() {
                let conn = conn.clone();
                closing.spawn(async move { conn.close().await });
            }
        }
        while closing.join_next().await.is_some() {}
    }
}
