//! Activating profiles other than the system one (home-manager, custom): set the profile link,
//! run its activation command as its user, with automatic and magic rollback per profile.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};

use super::{fan_out, HostResult, Outcome};
use crate::context::Context;
use crate::fleet::{ActivateDefaults, Host, Profile};
use crate::transport::{command_line, quote};

/// The script that activates one profile on the host (checked by `sh -n` in a test).
const PROFILE_SH: &str = include_str!("profile.sh");

/// Built-in settings when neither the runbook nor the inventory gives one.
const MAGIC_ROLLBACK: bool = true;
const AUTO_ROLLBACK: bool = true;
const CONFIRM_TIMEOUT: u64 = 30;
const ACTIVATION_TIMEOUT: u64 = 240;

/// What the profile script reports on its last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileState {
    /// The profile already pointed at the path: nothing ran.
    Unchanged,
    /// Set and activated.
    Activated,
    /// Set and activated; rolls back unless confirmed.
    Armed,
    /// The activation failed and the profile is left as it was set.
    Failed,
    /// The activation failed and the profile is back on what it was before.
    RolledBack,
}

impl ProfileState {
    /// Reads the `@@nixdeploy-profile STATE` line.
    fn parse(stdout: &str) -> Option<ProfileState> {
        let state = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("@@nixdeploy-profile "))?;
        Some(match state.trim() {
            "unchanged" => ProfileState::Unchanged,
            "activated" => ProfileState::Activated,
            "armed" => ProfileState::Armed,
            "failed" => ProfileState::Failed,
            "rolled-back" => ProfileState::RolledBack,
            _ => return None,
        })
    }
}

/// One profile's result on one host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProfileActivated {
    /// The profile name.
    pub profile: String,
    /// What happened to it.
    pub state: ProfileState,
}

/// The runbook's own settings for `activate`, over each profile's and host's inventory ones.
#[derive(Debug, Clone, Default)]
pub struct ProfileOptions {
    /// `magic_rollback`, when the runbook gives it.
    pub magic_rollback: Option<bool>,
    /// `auto_rollback`.
    pub auto_rollback: Option<bool>,
    /// `confirm_timeout`.
    pub confirm_timeout: Option<Duration>,
    /// `activation_timeout`.
    pub activation_timeout: Option<Duration>,
}

/// Chooses which of a host's profiles a step deals with, in order.
pub type PickProfiles = Arc<dyn Fn(&Host) -> Vec<Profile> + Send + Sync>;

/// Activates, on every host in parallel, the profiles `pick` chooses, one after the other in
/// the host's order; the first failure stops that host's remaining profiles.
pub async fn activate_profiles(
    ctx: &Arc<Context>,
    hosts: &[Arc<Host>],
    pick: PickProfiles,
    opts: ProfileOptions,
) -> Vec<HostResult<Vec<ProfileActivated>>> {
    let c = ctx.clone();
    fan_out(ctx, hosts, "activate-profiles", move |host| {
        let (ctx, pick, opts) = (c.clone(), pick.clone(), opts.clone());
        async move {
            let mut done = Vec::new();
            for profile in pick(&host) {
                let state = activate_one(&ctx, &host, &profile, &opts).await?;
                done.push(ProfileActivated {
                    profile: profile.name.clone(),
                    state,
                });
            }
            let changed: Vec<&str> = done
                .iter()
                .filter(|d| d.state != ProfileState::Unchanged)
                .map(|d| d.profile.as_str())
                .collect();
            if ctx.options.dry_run {
                let names: Vec<&str> = done.iter().map(|d| d.profile.as_str()).collect();
                let what = format!("would activate profiles {}", names.join(", "));
                return Ok(Outcome::planned(done, what));
            }
            if changed.is_empty() {
                return Ok(Outcome::skipped(done, "profiles unchanged"));
            }
            let message = format!("activated {}", changed.join(", "));
            Ok(Outcome::done(done).with_message(message))
        }
    })
    .await
}

/// The settings for one profile: the runbook's, then the profile's, then the host's.
fn settings(host: &Host, profile: &Profile, opts: &ProfileOptions) -> (bool, bool, u64, u64) {
    let inv: ActivateDefaults = profile.defaults.over(&host.activate_defaults);
    (
        opts.magic_rollback
            .or(inv.magic_rollback)
            .unwrap_or(MAGIC_ROLLBACK),
        opts.auto_rollback
            .or(inv.auto_rollback)
            .unwrap_or(AUTO_ROLLBACK),
        opts.confirm_timeout
            .map(|d| d.as_secs())
            .or(inv.confirm_timeout)
            .unwrap_or(CONFIRM_TIMEOUT),
        opts.activation_timeout
            .map(|d| d.as_secs())
            .or(inv.activation_timeout)
            .unwrap_or(ACTIVATION_TIMEOUT),
    )
}

/// The command line that runs the profile script (as root, before escalation).
pub fn profile_command(
    profile: &Profile,
    settings: (bool, bool, u64, u64),
    canary: &str,
) -> String {
    let (magic, auto, confirm, timeout) = settings;
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    command_line(&[
        "sh".to_string(),
        "-c".to_string(),
        PROFILE_SH.to_string(),
        "nixdeploy-profile".to_string(),
        profile.profile_path.clone(),
        profile.out_path.clone(),
        profile.user.clone(),
        profile.activate.clone(),
        timeout.to_string(),
        flag(auto),
        flag(magic),
        confirm.to_string(),
        canary.to_string(),
    ])
}

async fn activate_one(
    ctx: &Context,
    host: &Host,
    profile: &Profile,
    opts: &ProfileOptions,
) -> anyhow::Result<ProfileState> {
    if ctx.options.dry_run {
        return Ok(ProfileState::Unchanged);
    }
    let target = ctx.target(host);
    let conn = ctx.pool.get(&target).await?;
    let settings = settings(host, profile, opts);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // A profile of the login itself is deployed as that login (no escalation), as deploy-rs
    // does when sshUser is the profile's user; anything else runs as root, which runs the
    // activation as the profile's user.
    let as_login = host.target_user.as_deref() == Some(profile.user.as_str());
    let dir = if as_login && profile.user != "root" {
        "/tmp"
    } else {
        "/run/nixdeploy/profiles"
    };
    let canary = format!(
        "{dir}/nixdeploy-profile-{}-{}-{nanos}",
        profile.name,
        std::process::id()
    );
    let escalate = |line: &str| {
        if as_login {
            line.to_string()
        } else {
            host.escalation.root(line)
        }
    };
    let command = escalate(&profile_command(profile, settings, &canary));
    let out = conn.run(&command, None).await?;
    let state = ProfileState::parse(&out.stdout).ok_or_else(|| {
        anyhow!(
            "profile {}: the activation script ended without a result: {}",
            profile.name,
            out.last_error_line()
        )
    })?;
    match state {
        ProfileState::Failed => bail!(
            "profile {}: activation as {} failed: {}",
            profile.name,
            profile.user,
            out.last_error_line()
        ),
        ProfileState::RolledBack => bail!(
            "profile {}: activation as {} failed, rolled back to what it pointed at before: {}",
            profile.name,
            profile.user,
            out.last_error_line()
        ),
        ProfileState::Armed => {
            // The confirmation goes over a brand-new connection, as for the system.
            let confirm = escalate(&format!("rm {}", quote(&canary)));
            let timeout = Duration::from_secs(settings.2);
            match target.run_fresh(&confirm, timeout).await {
                Ok(o) if o.success() => Ok(ProfileState::Activated),
                Ok(o) => bail!(
                    "profile {}: could not confirm ({}); it rolls back within {}s",
                    profile.name,
                    o.last_error_line(),
                    settings.2
                ),
                Err(e) => bail!(
                    "profile {}: could not confirm over a new connection ({e:#}); it rolls back within {}s",
                    profile.name,
                    settings.2
                ),
            }
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::ProfileKind;

    #[test]
    fn the_profile_script_is_valid_shell_and_its_command_line_quotes_everything() {
        crate::transport::assert_valid_shell(PROFILE_SH);
        let p = Profile {
            name: "my app".into(),
            kind: ProfileKind::Custom,
            drv_path: String::new(),
            out_path: "/nix/store/abc-my app".into(),
            profile_path: "/nix/var/nix/profiles/my app".into(),
            user: "nobody".into(),
            activate: "$PROFILE/bin/activate 'x'".into(),
            defaults: Default::default(),
        };
        let line = profile_command(&p, (true, false, 30, 240), "/run/nixdeploy/profiles/x");
        crate::transport::assert_valid_shell(&line);
        assert!(line.contains("'/nix/var/nix/profiles/my app'"), "{line}");
    }

    #[test]
    fn the_last_state_line_is_the_result() {
        assert_eq!(
            ProfileState::parse("noise\n@@nixdeploy-profile armed\n"),
            Some(ProfileState::Armed)
        );
        assert_eq!(ProfileState::parse("@@nixdeploy-profile what"), None);
        assert_eq!(ProfileState::parse(""), None);
    }
}
