//! Checks of the deploying machine: Nix, its flake support, its store and build users, and ssh.

use std::process::Command;

use super::Check;
use crate::nix::setup::{LocalNix, StoreAccess};

const NIX_FEATURES: [&str; 2] = ["--extra-experimental-features", "nix-command flakes"];

/// Every deployer check, in a fixed order.
pub fn check_deployer() -> Vec<Check> {
    let mut checks = vec![nix_version()];
    if checks[0].status != super::Status::Ok {
        checks.push(ssh_client());
        return checks;
    }
    checks.push(nix_features());
    let nix = LocalNix::detect();
    checks.push(nix_store(&nix));
    checks.push(build_users(&nix));
    checks.push(ssh_client());
    checks
}

/// What a command printed (stdout, else stderr), or why it could not start.
fn output(program: &str, args: &[&str]) -> Result<(bool, String), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|err| format!("cannot run {program}: {err}"))?;
    let text = if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    };
    let text = String::from_utf8_lossy(text);
    let last_error = text
        .lines()
        .rev()
        .find(|l| l.starts_with("error"))
        .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
        .trim()
        .to_string();
    Ok((out.status.success(), last_error))
}

fn nix_version() -> Check {
    const NAME: &str = "nix.version";
    match output("nix", &["--version"]) {
        Ok((true, version)) => Check::ok(None, NAME, version),
        Ok((false, why)) => Check::fail(
            None,
            NAME,
            format!("`nix --version` failed: {why}"),
            INSTALL_NIX,
        ),
        Err(why) => Check::fail(None, NAME, why, INSTALL_NIX),
    }
}

const INSTALL_NIX: &str =
    "install Nix 2.4 or newer (Debian: apt-get install nix-bin nix-setup-systemd; \
     elsewhere the installer from nixos.org), and make sure `nix` is on PATH";

fn nix_features() -> Check {
    const NAME: &str = "nix.flakes";
    let mut args = NIX_FEATURES.to_vec();
    args.extend(["eval", "--expr", "builtins ? getFlake"]);
    match output("nix", &args) {
        Ok((true, out)) if out == "true" => Check::ok(None, NAME, "nix-command and flakes are usable"),
        Ok((_, out)) => Check::fail(
            None,
            NAME,
            format!("flakes are not usable: {out}"),
            "use Nix 2.4 or newer; nixdeploy enables the features itself, so an older Nix is the usual cause",
        ),
        Err(why) => Check::fail(None, NAME, why, INSTALL_NIX),
    }
}

fn nix_store(nix: &LocalNix) -> Check {
    const NAME: &str = "nix.store";
    let mut args = NIX_FEATURES.to_vec();
    args.extend(["store", "ping"]);
    let (ok, out) = match output("nix", &args) {
        Ok(r) => r,
        Err(why) => return Check::fail(None, NAME, why, INSTALL_NIX),
    };
    match (&nix.access, ok) {
        (StoreAccess::Daemon, true) => Check::ok(None, NAME, "the Nix daemon answers"),
        (StoreAccess::Daemon, false) => Check::fail(
            None,
            NAME,
            format!("the Nix daemon does not answer: {out}"),
            "start it (systemctl start nix-daemon.socket), or run nixdeploy as root to use the store directly",
        ),
        (StoreAccess::SingleUser, true) => Check::ok(None, NAME, "single-user: the local store is writable"),
        (StoreAccess::SingleUser, false) => Check::fail(
            None,
            NAME,
            format!("the local store cannot be opened: {out}"),
            "run as root, or as the owner of /nix, or start nix-daemon and set NIX_REMOTE=daemon",
        ),
    }
}

fn build_users(nix: &LocalNix) -> Check {
    const NAME: &str = "nix.build-users";
    if nix.access == StoreAccess::Daemon {
        return Check::ok(None, NAME, "builds run in the daemon, with its build users");
    }
    if !nix.root {
        return Check::ok(None, NAME, "single-user Nix builds as the calling user");
    }
    match &nix.build_users_group {
        None => Check::ok(None, NAME, "build-users-group is empty: builds run as root"),
        Some(group) if nix.missing_build_users() => Check::warn(
            None,
            NAME,
            format!("build-users-group '{group}' does not exist: nixdeploy builds as root without build users"),
            "create the build users (Debian: apt-get install nix-setup-systemd), or set \
             `build-users-group =` in /etc/nix/nix.conf to build as root on purpose",
        ),
        Some(group) => match group_members(group) {
            0 => Check::fail(
                None,
                NAME,
                format!("build-users-group '{group}' has no members: every build fails"),
                format!("add build users to '{group}' (Debian: dpkg-reconfigure nix-setup-systemd)"),
            ),
            n => Check::ok(None, NAME, format!("{n} build users in group '{group}'")),
        },
    }
}

/// How many users the group lists as members (`getent group`).
fn group_members(group: &str) -> usize {
    match output("getent", &["group", group]) {
        Ok((true, line)) => line
            .rsplit(':')
            .next()
            .map(|m| m.split(',').filter(|u| !u.is_empty()).count())
            .unwrap_or(0),
        _ => 0,
    }
}

fn ssh_client() -> Check {
    const NAME: &str = "ssh.client";
    match output("ssh", &["-V"]) {
        Ok((true, version)) => Check::ok(None, NAME, version),
        Ok((false, why)) | Err(why) => Check::fail(
            None,
            NAME,
            why,
            "install an OpenSSH client (Debian: apt-get install openssh-client)",
        ),
    }
}
