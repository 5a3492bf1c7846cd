//! The toplevel pass in the background: a run starts its runbook as soon as the metadata pass
//! is read, while evaluator threads evaluate the selected hosts batch by batch and deliver each
//! host to its [`Pending`] slot. A primitive waits only for the hosts it is given, so `deploy`
//! builds and copies the first hosts while the others are still being evaluated.
//!
//! Every slot is filled exactly once — with the evaluated host, or with a failed one (its
//! evaluation failed, or the pass stopped first) — so no step waits forever.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use super::inventory::Metadata;
use super::pending::Pending;
use super::toplevels::{self, EvalOptions, Evaluated};
use super::{Evaluation, Host, HostName, Inventory};

/// What the background pass reports.
#[derive(Debug)]
pub enum Progress {
    /// A host's evaluation failed, with the message its `evaluate` step shows.
    Failed {
        /// The host.
        host: HostName,
        /// Nix's message, with the host and field.
        message: String,
    },
    /// The pass is over (or was stopped); what it did.
    Finished(Evaluated),
}

/// A toplevel pass running in the background ([`Inventory::evaluate_in_background`]).
/// Dropping it stops the pass without waiting for it.
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    progress: Option<Receiver<Progress>>,
    invalid: Arc<OnceLock<String>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Background {
    /// A pass with nothing to evaluate: its progress channel is closed at once.
    pub(super) fn idle() -> Background {
        Background {
            stop: Default::default(),
            thread: None,
            progress: Some(channel().1),
            invalid: Default::default(),
        }
    }

    /// Failures as they happen, then the summary; the channel closes when the pass is over.
    /// (Taken once; later calls get a closed channel.)
    pub fn take_progress(&mut self) -> Receiver<Progress> {
        self.progress.take().unwrap_or_else(|| channel().1)
    }

    /// The inventory error the pass found, if any: an evaluated entry of the wrong shape (a
    /// toplevel that is not a derivation, say). Its hosts are failed; the run must stop.
    pub fn invalid(&self) -> impl Fn() -> Option<String> + Send + 'static {
        let invalid = self.invalid.clone();
        move || invalid.get().cloned()
    }

    /// A function that stops the pass from starting new batches (for an interrupt).
    pub fn stopper(&self) -> impl Fn() + Send + 'static {
        let stop = self.stop.clone();
        move || stop.store(true, Ordering::Relaxed)
    }

    /// Starts no new batch, waits for those being evaluated, and returns once every host's
    /// slot is filled (hosts never evaluated are marked failed: the run ended first).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the pass over `wanted` (hosts of `inventory`, whose metadata pass is `meta`): the
/// inventory with those hosts pending, and the running pass.
pub(super) fn start(
    inventory: &Inventory,
    meta: Arc<Metadata>,
    wanted: Vec<String>,
    options: &EvalOptions,
) -> anyhow::Result<(Inventory, Background)> {
    let mut pending = inventory.clone();
    let mut slots = BTreeMap::new();
    for name in &wanted {
        if let Some(host) = pending.hosts.get_mut(&HostName::new(name)) {
            let slot = Pending::new();
            slots.insert(name.clone(), (slot.clone(), host.clone()));
            Arc::make_mut(host).evaluation = Evaluation::Pending(slot);
        }
    }
    let (sender, progress) = channel();
    let stop = Arc::new(AtomicBool::new(false));
    let invalid = Arc::new(OnceLock::new());
    let pass = Pass {
        metadata: inventory.clone(),
        meta,
        slots,
        so_far: Mutex::new(BTreeMap::new()),
        sender,
        stop: stop.clone(),
        invalid: invalid.clone(),
    };
    let options = options.clone();
    let thread = std::thread::Builder::new()
        .name("toplevel-pass".into())
        .spawn(move || pass.run(&wanted, &options))?;
    let background = Background {
        stop,
        thread: Some(thread),
        progress: Some(progress),
        invalid,
    };
    Ok((pending, background))
}

/// The pass's own state, on its thread.
struct Pass {
    /// The inventory as the metadata pass read it.
    metadata: Inventory,
    meta: Arc<Metadata>,
    /// Each wanted host's slot, with its metadata-pass host (to fail it with).
    slots: BTreeMap<String, (Arc<Pending>, Arc<Host>)>,
    /// Every entry evaluated so far (an inventory is read from all of them at once).
    so_far: Mutex<BTreeMap<String, Value>>,
    sender: Sender<Progress>,
    stop: Arc<AtomicBool>,
    invalid: Arc<OnceLock<String>>,
}

impl Pass {
    fn run(&self, wanted: &[String], options: &EvalOptions) {
        let source = self.meta.source();
        let request = self.meta.request(&self.metadata.flake, &source);
        let result = toplevels::evaluate(
            &request,
            wanted,
            options,
            &|good, bad| self.deliver(good, bad),
            &self.stop,
        );
        let _ = self.sender.send(Progress::Finished(result));
    }

    /// Fills the slots of one finished batch: its evaluated hosts, and its failed ones.
    fn deliver(&self, good: &BTreeMap<String, Value>, bad: &BTreeMap<String, String>) {
        let entries = {
            let mut all = self.so_far.lock().unwrap_or_else(|e| e.into_inner());
            all.extend(good.clone());
            all.clone()
        };
        let evaluated = self.metadata.with_entries(&self.meta, &entries, bad);
        if let Err(e) = &evaluated {
            // An entry of the wrong shape is an error in the inventory, not in one host: it
            // stops the run, before any step takes these hosts.
            let _ = self.invalid.set(format!("{e:#}"));
            self.stop.store(true, Ordering::Relaxed);
        }
        for name in good.keys().chain(bad.keys()) {
            let Some((slot, unevaluated)) = self.slots.get(name) else {
                continue;
            };
            let host = match &evaluated {
                Ok(inv) => inv.hosts.get(&HostName::new(name)).cloned(),
                Err(_) => None,
            };
            slot.fill(host.unwrap_or_else(|| {
                let why = match &evaluated {
                    Err(e) => format!("{e:#}"),
                    Ok(_) => format!("host {name} is missing from its evaluation"),
                };
                failed(unevaluated, why)
            }));
        }
        for (host, message) in bad {
            let _ = self.sender.send(Progress::Failed {
                host: HostName::new(host),
                message: message.clone(),
            });
        }
    }
}

/// Whatever way the pass ends, no slot is left empty for a step to wait on forever.
impl Drop for Pass {
    fn drop(&mut self) {
        for (slot, host) in self.slots.values() {
            if slot.get().is_none() {
                slot.fill(failed(
                    host,
                    format!(
                        "host {} was not evaluated: the run ended before its toplevel was",
                        host.name
                    ),
                ));
            }
        }
    }
}

/// `host` (a metadata-pass host) marked failed with `why`.
fn failed(host: &Host, why: String) -> Arc<Host> {
    let mut host = host.clone();
    host.evaluation = Evaluation::Failed(why);
    Arc::new(host)
}
