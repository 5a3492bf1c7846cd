//! What a host runs, as this run last looked: the running system, the profile's target and
//! its generation link. `copy` takes the look when it asks whether the host has the system
//! already; the activation that follows may decide from it that the host is unchanged instead
//! of asking again — but only while the look still holds: nothing else ran on the host's
//! connection since, the connection is the same one, and the look is under a second old.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::Current;
use crate::fleet::HostName;
use crate::transport::Connection;

/// How long a look is trusted at most: long enough for `copy` → `activate` of one host, short
/// enough that a runbook pausing between the two (a health check, a human gate) asks again.
const FRESH: Duration = Duration::from_secs(1);

/// One look at a host.
#[derive(Debug)]
struct Look {
    current: Current,
    conn: Weak<Connection>,
    /// The connection's command count right after the look.
    commands: u64,
    at: Instant,
}

/// The looks of one run, by host; each is used at most once.
#[derive(Debug, Default)]
pub struct Looks(Mutex<HashMap<HostName, Look>>);

impl Looks {
    /// Keeps what `conn`'s last command read of `host`.
    pub fn remember(&self, host: &HostName, conn: &Arc<Connection>, current: Current) {
        let look = Look {
            current,
            conn: Arc::downgrade(conn),
            commands: conn.commands_started(),
            at: Instant::now(),
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.clone(), look);
    }

    /// The look at `host` if it still holds for `conn`, the connection the caller would ask
    /// over; taken, so a second caller asks the host.
    pub fn take(&self, host: &HostName, conn: &Arc<Connection>) -> Option<Current> {
        let look = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(host)?;
        let same = Weak::ptr_eq(&look.conn, &Arc::downgrade(conn));
        (same && look.commands == conn.commands_started() && look.at.elapsed() < FRESH)
            .then_some(look.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Target;

    fn local(name: &str) -> (HostName, Arc<Connection>) {
        let host = HostName::parse(name).unwrap();
        let target = Target {
            host: host.clone(),
            destination: "localhost".into(),
            user: None,
            port: None,
            config: None,
            options: Vec::new(),
            system: "x86_64-linux".into(),
            local: true,
            escalation: Default::default(),
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let conn = rt
            .block_on(Connection::open(target, std::path::Path::new("/tmp"), None))
            .unwrap();
        (host, Arc::new(conn))
    }

    fn runs(system: &str) -> Current {
        Current::from_probe([system, system, "system-3-link"].into_iter())
    }

    #[test]
    fn a_look_serves_the_next_caller_once() {
        let (host, conn) = local("h1");
        let looks = Looks::default();
        looks.remember(&host, &conn, runs("/nix/store/a"));
        let now = looks.take(&host, &conn).expect("the look holds");
        assert_eq!(now.system(), Some("/nix/store/a"));
        assert!(
            looks.take(&host, &conn).is_none(),
            "taken: the next caller asks"
        );
    }

    #[test]
    fn a_command_on_the_host_or_another_connection_voids_the_look() {
        let (host, conn) = local("h1");
        let looks = Looks::default();
        looks.remember(&host, &conn, runs("/nix/store/a"));
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(conn.run("true", None)).unwrap();
        assert!(looks.take(&host, &conn).is_none(), "a command ran since");

        let (_, other) = local("h1");
        looks.remember(&host, &conn, runs("/nix/store/a"));
        assert!(looks.take(&host, &other).is_none(), "another connection");
    }
}
