//! The one context value handed to the engine and the steps: inventory, connections, options, reporting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::activation::{Armed, LockGuard};
use crate::fleet::{Host, HostName, Inventory};
use crate::nix::Nix;
use crate::report::Reporter;
use crate::transport::{Pool, Target};

/// How far an interruption (Ctrl-C) has gone.
#[derive(Debug, Default)]
pub struct Interrupt(AtomicU8);

impl Interrupt {
    /// First Ctrl-C: start nothing new. Second: abort in-flight work.
    pub fn escalate(&self) -> u8 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Moves to "start nothing new" unless already there or further; returns whether it moved.
    pub fn stop(&self) -> bool {
        self.0
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// No new host operations may start.
    pub fn stopping(&self) -> bool {
        self.0.load(Ordering::SeqCst) >= 1
    }

    /// In-flight operations are abandoned.
    pub fn aborting(&self) -> bool {
        self.0.load(Ordering::SeqCst) >= 2
    }

    /// Back to normal (the REPL does this after each input).
    pub fn reset(&self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

/// A key uploaded before its owner existed: `(path, user, group)`.
pub type PendingOwner = (String, String, String);

/// Who is running this deployment (recorded in locks and the journal).
#[derive(Debug, Clone)]
pub struct RunMeta {
    /// The local user.
    pub user: String,
    /// The deploying machine's hostname.
    pub machine: String,
    /// The runbook path, or `repl`.
    pub runbook: String,
    /// The `--on` selector.
    pub selector: Option<String>,
}

impl RunMeta {
    /// Reads user and machine from the environment.
    pub fn detect(runbook: &str, selector: Option<&str>) -> RunMeta {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| format!("uid{}", unsafe { libc::getuid() }));
        let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        RunMeta {
            user,
            machine,
            runbook: runbook.to_string(),
            selector: selector.map(str::to_string),
        }
    }
}

/// Options that shape how steps behave.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Hosts worked on at once.
    pub parallel: usize,
    /// Mutating steps only plan.
    pub dry_run: bool,
    /// `wait_for_confirm` proceeds without asking.
    pub yes: bool,
    /// Break other runs' deploy locks.
    pub force_unlock: bool,
    /// Standard input is a terminal (gates can ask).
    pub interactive: bool,
    /// `--sign-with FILE`: the secret key that signs copied closures, for every host.
    pub sign_with: Option<std::path::PathBuf>,
    /// Keep ssh masters this long after the run (`None`: close them at the end).
    pub persist: Option<std::time::Duration>,
}

/// Everything a run shares.
pub struct Context {
    /// The inventory.
    pub inventory: Arc<Inventory>,
    /// The hosts this run may touch (`--on`), in inventory order.
    pub allowed: Vec<Arc<Host>>,
    /// Open connections.
    pub pool: Pool,
    /// How to call Nix.
    pub nix: Nix,
    /// Where events go.
    pub reporter: Reporter,
    /// Behaviour switches.
    pub options: RunOptions,
    /// Ctrl-C state.
    pub interrupt: Arc<Interrupt>,
    /// Who runs this.
    pub meta: RunMeta,
    /// The async runtime the steps run on.
    pub runtime: tokio::runtime::Handle,
    /// Deploy locks held on hosts, released at the end of the run.
    pub locks: Mutex<HashMap<HostName, LockGuard>>,
    /// Activations waiting for `confirm` or `rollback`.
    pub armed: Mutex<HashMap<HostName, Armed>>,
    /// Keys uploaded before their owner existed: `(path, user, group)` per host.
    pub pending_owners: Mutex<HashMap<HostName, Vec<PendingOwner>>>,
    /// What an activation found a host already running, so nothing to do: the system and its
    /// profile's generation. The journal records such a host from this instead of asking it
    /// again at the end of the run.
    pub found_unchanged: Mutex<HashMap<HostName, (String, Option<u32>)>>,
    /// What `copy` saw each host run, for the activation right after it.
    pub looks: crate::activation::Looks,
}

impl Context {
    /// The ssh target of a host.
    pub fn target(&self, host: &Host) -> Target {
        Target::of(host, &self.inventory)
    }

    /// Is this host within `--on`?
    pub fn is_allowed(&self, name: &HostName) -> bool {
        self.allowed.iter().any(|h| &h.name == name)
    }
}
