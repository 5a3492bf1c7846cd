//! A host whose toplevel is being evaluated in the background: the slot its evaluated entry
//! arrives in, and the two ways to wait for it (from async steps, and from the Rhai engine's
//! thread).
//!
//! A run starts its runbook as soon as the metadata pass is read; the toplevel pass goes on
//! in evaluator threads and fills each host's slot as its batch finishes. Every slot is filled
//! exactly once, with an evaluated host or a failed one, also when the evaluation is stopped
//! (see `inventory::Background`), so nothing waits forever.

use std::sync::{Arc, Condvar, Mutex, OnceLock};

use super::Host;

/// Where one host's evaluated entry arrives.
#[derive(Default)]
pub struct Pending {
    host: OnceLock<Arc<Host>>,
    /// Guards the condition variable's check-then-wait against a fill in between.
    lock: Mutex<()>,
    filled: Condvar,
    notify: tokio::sync::Notify,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.get() {
            Some(h) => write!(f, "Pending(filled: {})", h.name),
            None => f.write_str("Pending(evaluating)"),
        }
    }
}

/// Two slots are the same slot, never merely equal ones.
impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Pending {}

impl Pending {
    /// An empty slot.
    pub fn new() -> Arc<Pending> {
        Arc::new(Pending::default())
    }

    /// Delivers the host; only the first delivery counts.
    pub fn fill(&self, host: Arc<Host>) {
        if self.host.set(host).is_err() {
            return;
        }
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.filled.notify_all();
        self.notify.notify_waiters();
    }

    /// The host, if it has arrived.
    pub fn get(&self) -> Option<Arc<Host>> {
        self.host.get().cloned()
    }

    /// Waits for the host without blocking the async runtime.
    pub async fn wait(&self) -> Arc<Host> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a fill between the two still wakes us.
            notified.as_mut().enable();
            if let Some(host) = self.get() {
                return host;
            }
            notified.await;
        }
    }

    /// Waits for the host, blocking the calling thread (never call it on a runtime worker).
    pub fn wait_blocking(&self) -> Arc<Host> {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(host) = self.get() {
                return host;
            }
            guard = self.filled.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Arc<Host> {
        let inv = crate::fleet::testing::inventory(&[(name, &[])]);
        inv.hosts.values().next().unwrap().clone()
    }

    #[test]
    fn a_blocking_waiter_wakes_when_the_host_arrives() {
        let slot = Pending::new();
        let filler = slot.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            filler.fill(host("h1"));
        });
        assert_eq!(slot.wait_blocking().name.as_str(), "h1");
        t.join().unwrap();
    }

    #[test]
    fn an_async_waiter_wakes_and_only_the_first_fill_counts() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let slot = Pending::new();
        let filler = slot.clone();
        std::thread::spawn(move || {
            filler.fill(host("first"));
            filler.fill(host("second"));
        });
        let got = rt.block_on(slot.wait());
        assert_eq!(got.name.as_str(), "first");
        assert_eq!(slot.get().unwrap().name.as_str(), "first");
    }
}
