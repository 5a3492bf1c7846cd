//! `reboot`: start a host's reboot detached, drop its pooled connection, wait until it answers
//! with a new boot id, and check that it runs the system its profile points at.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use super::{fan_out, HostResult, Outcome};
use crate::context::Context;
use crate::fleet::Host;
use crate::transport::quote;

/// How long to wait between two attempts to reach a rebooting host.
const POLL: Duration = Duration::from_millis(500);

/// How long one attempt to reach it may take.
const ATTEMPT: Duration = Duration::from_secs(5);

/// What a host said about its boot: its boot id and the systems it runs and should run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Boot {
    id: String,
    running: Option<String>,
    profile: Option<String>,
}

/// What `reboot` did on one host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rebooted {
    /// The system it runs after the reboot.
    pub path: String,
    /// Its boot id before.
    pub boot_id_before: String,
    /// Its boot id after.
    pub boot_id: String,
    /// Seconds until it answered again.
    pub seconds: f64,
}

/// Reboots `hosts`, each waiting up to `timeout` for the host to come back.
pub async fn reboot(
    ctx: &Arc<Context>,
    hosts: &[Arc<Host>],
    timeout: Duration,
) -> Vec<HostResult<Rebooted>> {
    let c = ctx.clone();
    fan_out(ctx, hosts, "reboot", move |host| {
        let ctx = c.clone();
        async move { reboot_one(&ctx, &host, timeout).await }
    })
    .await
}

/// Prints the boot id, then where `/run/current-system` and the profile point.
fn probe_command(profile: &str) -> String {
    format!(
        "cat /proc/sys/kernel/random/boot_id; readlink -f /run/current-system || echo; readlink -f {} || echo",
        quote(profile)
    )
}

fn parse(stdout: &str) -> Option<Boot> {
    let mut lines = stdout.lines().map(str::trim);
    let id = lines.next().filter(|l| !l.is_empty())?.to_string();
    let some = |l: Option<&str>| l.filter(|l| !l.is_empty()).map(str::to_string);
    Some(Boot {
        id,
        running: some(lines.next()),
        profile: some(lines.next()),
    })
}

/// Starts the reboot detached from the session, which the reboot ends.
fn reboot_command() -> &'static str {
    "setsid reboot </dev/null >/dev/null 2>&1 &"
}

async fn reboot_one(
    ctx: &Context,
    host: &Host,
    timeout: Duration,
) -> anyhow::Result<Outcome<Rebooted>> {
    if host.local {
        bail!(
            "refusing to reboot {}: it is the machine nixdeploy runs on",
            host.name
        );
    }
    let target = ctx.target(host);
    let conn = ctx.pool.get(&target).await?;
    let probe = host.escalation.root(&probe_command(&host.profile));
    let before = conn.run(&probe, None).await?;
    let before = parse(&before.stdout).ok_or_else(|| {
        anyhow!(
            "cannot read the boot id of {}: {}",
            host.name,
            before.last_error_line()
        )
    })?;
    if ctx.options.dry_run {
        let value = Rebooted {
            path: before.profile.clone().unwrap_or_default(),
            boot_id_before: before.id.clone(),
            boot_id: before.id,
            seconds: 0.0,
        };
        return Ok(Outcome::planned(value, "would reboot"));
    }
    // The reboot ends the deploy lock's holder: let go of it first; a later step takes it anew.
    crate::activation::release_lock(ctx, host);
    // The command may lose its connection as the host goes down: that is the reboot working.
    let _ = conn
        .run(&host.escalation.root(reboot_command()), None)
        .await;
    ctx.pool.forget(&target).await;
    let started = Instant::now();
    let after = loop {
        if started.elapsed() > timeout {
            bail!(
                "{} did not come back with a new boot id within {}s",
                host.name,
                timeout.as_secs()
            );
        }
        if let Ok(out) = target.run_fresh(&probe, ATTEMPT).await {
            if let Some(now) = parse(&out.stdout).filter(|b| out.success() && b.id != before.id) {
                break now;
            }
        }
        tokio::time::sleep(POLL).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    // Later steps get a connection to the new boot.
    ctx.pool.reconnect(&target).await?;
    match (&after.running, &before.profile) {
        (Some(running), Some(wanted)) if running == wanted => Ok(Outcome::done(Rebooted {
            path: running.clone(),
            boot_id_before: before.id,
            boot_id: after.id,
            seconds,
        })
        .with_message(format!("back after {seconds:.1}s running {running}"))),
        (running, wanted) => bail!(
            "{} rebooted but runs {}, not its profile's system {}",
            host.name,
            running.as_deref().unwrap_or("nothing"),
            wanted.as_deref().unwrap_or("(no profile)")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_valid_shell_and_reads_back() {
        crate::transport::assert_valid_shell(&probe_command("/nix/var/nix/profiles/my system"));
        crate::transport::assert_valid_shell(reboot_command());
        assert_eq!(
            parse("abc\n/nix/store/x\n/nix/store/y\n"),
            Some(Boot {
                id: "abc".into(),
                running: Some("/nix/store/x".into()),
                profile: Some("/nix/store/y".into()),
            })
        );
        assert_eq!(parse("abc\n\n\n").unwrap().running, None);
        assert_eq!(parse(""), None);
    }
}
