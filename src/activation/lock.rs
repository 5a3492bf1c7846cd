//! Deploy locks: one run at a time per host. The lock is an `flock` held by a remote process fed
//! heartbeats over the run's connection, so it ends with the deployer — even one killed outright.
//! A lock that ends while the run still holds it (the connection died, the heartbeat stopped) is
//! noticed at once, reported, and fails the host at its next step: never silently lost.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::script::STATE_DIR;
use crate::context::Context;
use crate::fleet::Host;
use crate::report::Level;
use crate::transport::quote;

/// Seconds without a heartbeat after which the remote holder gives the lock up.
const EXPIRY_SECS: u64 = 30;
/// How often the deployer sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// A held lock: dropping it (or the deployer dying) closes the holder's stdin and frees the host.
pub struct LockGuard {
    heartbeat: tokio::task::JoinHandle<()>,
    /// Why the remote holder ended on its own, once it has.
    lost: Lost,
}

/// Why a lock ended on its own, once it has.
type Lost = Arc<std::sync::Mutex<Option<String>>>;

impl LockGuard {
    /// Why the lock ended while the run still held it, if it did.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap().clone()
    }
}

/// Lets go of `host`'s deploy lock on purpose (before a reboot, which ends its holder): the
/// heartbeat stops and nothing reports it lost. A later step takes the lock again.
pub fn release(ctx: &Context, host: &Host) {
    if let Some(guard) = ctx.locks.lock().unwrap().remove(&host.name) {
        guard.heartbeat.abort();
    }
}

/// Whether this run holds `host`'s deploy lock; an error when it held it and lost it.
pub fn holds(ctx: &Context, host: &Host) -> anyhow::Result<bool> {
    let locks = ctx.locks.lock().unwrap();
    let Some(guard) = locks.get(&host.name) else {
        return Ok(false);
    };
    match guard.lost() {
        None => Ok(true),
        Some(why) => Err(lost_error(host, &why)),
    }
}

fn lost_error(host: &Host, why: &str) -> anyhow::Error {
    anyhow!(
        "this run lost the deploy lock on {} ({why}); another run may have taken it since, so {} is not changed further. Run again to deploy it",
        host.name,
        host.name
    )
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// The remote command that takes the lock or says who holds it.
fn lock_command(owner: &str) -> String {
    let dir = STATE_DIR;
    let holder = format!(
        "if ! flock -n {dir}/activation.lock true; then echo pending; exit 76; fi; \
         printf '%s holder=%s\\n' \"$1\" \"$$\" > {dir}/deploy.owner; echo locked; \
         while timeout {EXPIRY_SECS} sh -c 'read -r x'; do :; done"
    );
    format!(
        "mkdir -p {dir}; flock -n -o -E 75 {dir}/deploy.lock sh -c {holder} sh {owner}; rc=$?; \
         if [ $rc -eq 75 ]; then echo \"busy $(cat {dir}/deploy.owner 2>/dev/null)\"; fi; exit $rc",
        holder = quote(&holder),
        owner = quote(owner),
    )
}

/// Kills the process holding another run's lock (for `--force-unlock`).
fn break_command() -> String {
    let dir = STATE_DIR;
    format!(
        "h=$(sed -n 's/.* holder=\\([0-9][0-9]*\\).*/\\1/p' {dir}/deploy.owner 2>/dev/null); \
         [ -n \"$h\" ] && kill \"$h\" 2>/dev/null; i=0; \
         while ! flock -n {dir}/deploy.lock true && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; true"
    )
}

/// Makes sure this run holds `host`'s deploy lock (taken once, kept until the run ends).
pub async fn lock(ctx: &Context, host: &Host) -> anyhow::Result<()> {
    if holds(ctx, host)? {
        return Ok(());
    }
    let owner = format!(
        "{}@{} pid={} runbook={} since={}",
        ctx.meta.user,
        ctx.meta.machine,
        std::process::id(),
        ctx.meta.runbook.replace(' ', "_"),
        crate::journal::rfc3339(SystemTime::now())
    );
    let conn = ctx.pool.get(&ctx.target(host)).await?;
    for attempt in 0..2 {
        let mut child = conn.spawn_held(&lock_command(&owner)).await?;
        let stdout = child.stdout().take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .map_err(|_| anyhow!("no answer from {} while taking its deploy lock", host.name))?
            .unwrap_or(None)
            .unwrap_or_default();
        if first == "locked" {
            let stdin = child.stdin().take().expect("piped");
            let lost = Lost::default();
            let watch = Watch {
                host: host.name.to_string(),
                reporter: ctx.reporter.clone(),
                lost: lost.clone(),
            };
            let heartbeat = tokio::spawn(watch.run(child, stdin, lines));
            ctx.locks
                .lock()
                .unwrap()
                .insert(host.name.clone(), LockGuard { heartbeat, lost });
            return Ok(());
        }
        let holder = first.strip_prefix("busy ").map(str::to_string);
        let pending = first == "pending";
        if ctx.options.force_unlock && attempt == 0 {
            let what = if pending {
                "an unconfirmed activation".to_string()
            } else {
                holder.clone().unwrap_or_default()
            };
            ctx.reporter.message(
                Level::Warn,
                format!(
                    "--force-unlock: breaking the deploy lock of {} held by {what}",
                    host.name
                ),
            );
            if !pending {
                conn.run(&break_command(), None).await?;
            } else {
                bail!(
                    "{} has an activation waiting for confirmation or rollback; it ends within its confirm timeout (not broken by --force-unlock)",
                    host.name
                );
            }
            continue;
        }
        if pending {
            bail!(
                "{} has an activation waiting for confirmation or rollback by another run; try again once it has ended",
                host.name
            );
        }
        return match holder {
            Some(h) => Err(anyhow!(
                "{} is locked by another deployment: {h}; wait for it to finish, or pass --force-unlock if that run is gone",
                host.name
            )),
            None => Err(anyhow!("cannot take the deploy lock on {}: {}", host.name, first)),
        };
    }
    bail!(
        "cannot take the deploy lock on {} even after breaking it",
        host.name
    )
}

type HeldChild = crate::transport::Held;
type HolderLines = tokio::io::Lines<BufReader<crate::transport::HeldOut>>;

/// The task that keeps a lock alive and notices when it ends on its own.
struct Watch {
    host: String,
    reporter: crate::report::Reporter,
    lost: Lost,
}

impl Watch {
    /// Sends a heartbeat every [`HEARTBEAT`] and waits for the holder's output to end: it only
    /// ends when the holder does (its connection died, or it gave the lock up). Aborted when the
    /// run releases the lock, so reaching the end means the lock was lost.
    async fn run(
        self,
        child: HeldChild,
        mut stdin: crate::transport::HeldIn,
        mut lines: HolderLines,
    ) {
        let _child = child;
        let mut tick = tokio::time::interval(HEARTBEAT);
        let why = loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(_)) => continue,
                    Ok(None) => break "the lock holder's connection ended".to_string(),
                    Err(e) => break format!("reading from the lock holder failed: {e}"),
                },
                _ = tick.tick() => {
                    if let Err(e) = async { stdin.write_all(b"\n").await?; stdin.flush().await }.await {
                        break format!("the heartbeat could not be sent: {e}");
                    }
                }
            }
        };
        *self.lost.lock().unwrap() = Some(why.clone());
        self.reporter.message(
            Level::Error,
            format!(
                "lost the deploy lock on {} ({why}); it fails at its next step",
                self.host
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_commands_are_valid_shell() {
        for script in [lock_command("root@x pid=1 since=now"), break_command()] {
            crate::transport::assert_valid_shell(&script);
        }
    }
}
