//! `doctor`: read-only checks of the deploying machine and of every selected host, each with
//! a verdict and, for every problem, one line saying how to fix it. Nothing is ever changed.

mod deployer;
mod remote;

use std::sync::Arc;

use serde::Serialize;

use crate::fleet::{Host, Inventory};

pub use deployer::check_deployer;
pub use remote::{check_host, WATCHDOG_TOOLS};

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing stands in the way.
    Ok,
    /// Works, but is slow, fragile or about to break.
    Warn,
    /// A deploy would fail here.
    Fail,
}

impl Status {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The host checked; `None` for the deploying machine.
    pub host: Option<String>,
    /// The check's name (`nix.version`, `ssh.reach`, ...; see docs/doctor.md).
    pub check: &'static str,
    /// Its verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix it; present for every `warn` and `fail`.
    pub fix: Option<String>,
}

impl Check {
    fn new(host: Option<&str>, check: &'static str, status: Status, detail: String) -> Check {
        Check {
            host: host.map(str::to_string),
            check,
            status,
            detail,
            fix: None,
        }
    }

    /// A passing check.
    pub fn ok(host: Option<&str>, check: &'static str, detail: impl Into<String>) -> Check {
        Check::new(host, check, Status::Ok, detail.into())
    }

    /// A warning with its fix.
    pub fn warn(
        host: Option<&str>,
        check: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            fix: Some(fix.into()),
            ..Check::new(host, check, Status::Warn, detail.into())
        }
    }

    /// A failure with its fix.
    pub fn fail(
        host: Option<&str>,
        check: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            fix: Some(fix.into()),
            ..Check::new(host, check, Status::Fail, detail.into())
        }
    }
}

/// Every check of one `doctor` run, deployer first, then hosts in name order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// No check failed (warnings allowed).
    pub ok: bool,
    /// How many checks ended in each verdict.
    pub counts: Counts,
    /// The checks.
    pub checks: Vec<Check>,
}

/// Verdict counts of a [`Report`].
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Passed.
    pub ok: usize,
    /// Warned.
    pub warn: usize,
    /// Failed.
    pub fail: usize,
}

impl Report {
    /// A report of these checks.
    pub fn new(checks: Vec<Check>) -> Report {
        let count = |s| checks.iter().filter(|c| c.status == s).count();
        let counts = Counts {
            ok: count(Status::Ok),
            warn: count(Status::Warn),
            fail: count(Status::Fail),
        };
        Report {
            ok: counts.fail == 0,
            counts,
            checks,
        }
    }

    /// The hosts with at least one failed check, in report order.
    pub fn failed_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for c in &self.checks {
            if let (Status::Fail, Some(h)) = (c.status, &c.host) {
                if !hosts.contains(h) {
                    hosts.push(h.clone());
                }
            }
        }
        hosts
    }

    /// The table `doctor` prints: one row per check, a `fix:` line under every problem.
    pub fn render(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.check.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let host_width = self
            .checks
            .iter()
            .filter_map(|c| c.host.as_ref().map(String::len))
            .max()
            .unwrap_or(4)
            .max(8);
        let mut out = format!(
            "{:<host_width$}  {:<width$}  {:<6}  DETAIL\n",
            "HOST", "CHECK", "STATUS"
        );
        for c in &self.checks {
            let host = c.host.as_deref().unwrap_or("deployer");
            out.push_str(&format!(
                "{host:<host_width$}  {:<width$}  {:<6}  {}\n",
                c.check,
                c.status.as_str(),
                c.detail
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!(
                    "{:<host_width$}  {:<width$}          fix: {fix}\n",
                    "", ""
                ));
            }
        }
        out.push_str(&format!(
            "\n{} ok, {} warning(s), {} failed\n",
            self.counts.ok, self.counts.warn, self.counts.fail
        ));
        out
    }
}

/// Checks every host of `hosts` at once (they are independent) and returns their rows in the
/// order of `hosts`.
pub async fn check_hosts(inventory: &Inventory, hosts: &[Arc<Host>]) -> Vec<Check> {
    let mut set = tokio::task::JoinSet::new();
    for (i, host) in hosts.iter().enumerate() {
        let target = crate::transport::Target::of(host, inventory);
        let host = Arc::clone(host);
        set.spawn(async move { (i, check_host(target, host).await) });
    }
    let mut rows = Vec::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok(row) => rows.push(row),
            Err(err) => rows.push((
                usize::MAX,
                vec![Check::fail(
                    None,
                    "doctor",
                    format!("a host check crashed: {err}"),
                    "report this as a bug",
                )],
            )),
        }
    }
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().flat_map(|(_, checks)| checks).collect()
}
