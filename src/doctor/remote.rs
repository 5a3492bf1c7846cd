//! Checks of one host, read-only: ssh reachability and host key, the login and its escalation,
//! the Nix store as `copy` reaches it, Nix trust, activation's tools, `/run`, free space in
//! `/nix`, and whether the host's system is the inventory's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::Check;
use crate::fleet::Host;
use crate::transport::{quote, Escalation, Feed, Output, Target};

/// The commands activation runs on a host (the watchdog, its launcher and the profile switch).
pub const WATCHDOG_TOOLS: [&str; 14] = [
    "sh", "flock", "setsid", "timeout", "mkfifo", "tail", "date", "readlink", "ln", "mv", "rm",
    "mkdir", "cat", "nix-env",
];

/// The probe run as the login (see probe.sh).
const PROBE: &str = include_str!("probe.sh");
/// The probe run as root (see root_probe.sh).
const ROOT_PROBE: &str = include_str!("root_probe.sh");

/// Below this much free space in `/nix`, a deploy is likely to fail.
const FAIL_FREE_KIB: u64 = 100 * 1024;
/// Below this much, warn.
const WARN_FREE_KIB: u64 = 1024 * 1024;

const TIMEOUT: Duration = Duration::from_secs(15);

/// Every check of one host; after a failed `ssh.reach` nothing else can be checked.
pub async fn check_host(target: Target, host: Arc<Host>) -> Vec<Check> {
    let name = host.name.as_str();
    let script = format!("TOOLS={}\n{PROBE}", quote(&WATCHDOG_TOOLS.join(" ")));
    let probe = match target.run_fresh(&script, TIMEOUT).await {
        Ok(out) if out.status != Some(255) => out,
        Ok(out) => return vec![reach_failure(name, &target, &out.stderr)],
        Err(err) => return vec![reach_failure(name, &target, &format!("{err:#}"))],
    };
    let facts = parse_facts(&probe.stdout);
    let mut checks = vec![Check::ok(
        Some(name),
        "ssh.reach",
        format!("reachable as {}, host key known", target.display()),
    )];
    checks.push(login(name, &facts));
    let (escalation, root_facts) = escalate(name, &target, &host.escalation, &facts).await;
    checks.push(escalation);
    checks.push(store_reach(name, &target).await);
    checks.push(trust(name, &facts, host.escalation.is_none()));
    checks.push(tools(name, &facts));
    if let Some(root) = &root_facts {
        checks.push(run_writable(name, root));
        checks.push(store_writable(name, root));
    }
    checks.push(free_space(name, &facts));
    checks.push(system(name, &host.system, &facts));
    if let Some(cache) = &host.cache {
        checks.push(super::cache::reach(name, &target, cache).await);
    }
    checks
}

/// `key=value` lines into a map (later keys win).
fn parse_facts(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Why ssh could not get in, from its own words.
fn reach_failure(host: &str, target: &Target, stderr: &str) -> Check {
    const NAME: &str = "ssh.reach";
    let dest = target.display();
    let known_hosts = match &target.config {
        Some(c) => format!("the UserKnownHostsFile of {}", c.display()),
        None => "~/.ssh/known_hosts".to_string(),
    };
    let line = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('@') && !l.starts_with("Warning: Permanently"))
        .unwrap_or("no output")
        .to_string();
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || stderr.contains("Host key for") && stderr.contains("has changed")
    {
        return Check::fail(
            Some(host),
            NAME,
            format!("host key mismatch: {dest} presents a key that differs from the one in {known_hosts}"),
            "if the host was reinstalled, get its new key over a trusted channel (its console, your provisioning) \
             and replace its line in known_hosts; nixdeploy never accepts a changed key",
        );
    }
    if stderr.contains("Host key verification failed") || stderr.contains("host key is known") {
        return Check::fail(
            Some(host),
            NAME,
            format!("the host key of {dest} is not known ({line})"),
            format!("add the host's public key to {known_hosts}, checked against a fingerprint from a trusted source"),
        );
    }
    if stderr.contains("Permission denied") {
        return Check::fail(
            Some(host),
            NAME,
            format!("{dest} refused the login: {line}"),
            "authorise the deployer's key for the login (users.users.<login>.openssh.authorizedKeys.keys), \
             or set targetUser / the ssh config's IdentityFile",
        );
    }
    if stderr.contains("Connection refused") {
        return Check::fail(
            Some(host),
            NAME,
            format!("nothing listens for ssh at {dest}: {line}"),
            "start sshd on the host (services.openssh.enable = true), or set targetPort",
        );
    }
    if stderr.contains("Could not resolve hostname") {
        return Check::fail(
            Some(host),
            NAME,
            line.clone(),
            "set targetHost to an address or a name this machine resolves",
        );
    }
    Check::fail(
        Some(host),
        NAME,
        format!("{dest} is unreachable: {line}"),
        format!("check the network path to the host (`ssh -v {dest}` shows where it stops)"),
    )
}

fn login(host: &str, facts: &BTreeMap<String, String>) -> Check {
    match (facts.get("user"), facts.get("uid")) {
        (Some(user), Some(uid)) if !user.is_empty() => {
            Check::ok(Some(host), "login", format!("{user} (uid {uid})"))
        }
        _ => Check::fail(
            Some(host),
            "login",
            "the login's user could not be read (`id` failed)",
            "give the login a real account with a POSIX shell on the host",
        ),
    }
}

/// Runs the root probe (escalated when the login is not root) and judges the escalation.
async fn escalate(
    host: &str,
    target: &Target,
    escalation: &Escalation,
    facts: &BTreeMap<String, String>,
) -> (Check, Option<BTreeMap<String, String>>) {
    const NAME: &str = "escalation";
    // Never prompts: a check must not wait at a password prompt.
    let probe = escalation.wrap(ROOT_PROBE, Feed::NoPassword);
    let run = target.run_fresh(&probe, TIMEOUT).await;
    let out = match run {
        Ok(out) => out,
        Err(err) => {
            return (
                Check::fail(
                    Some(host),
                    NAME,
                    format!("{err:#}"),
                    "check that the host stays reachable",
                ),
                None,
            )
        }
    };
    let root = parse_facts(&out.stdout);
    let is_root = root.get("root_uid").map(String::as_str) == Some("0");
    let user = facts.get("user").cloned().unwrap_or_default();
    let check = match (escalation.is_none(), is_root) {
        (true, true) => Check::ok(Some(host), NAME, "the login is root: nothing to escalate"),
        (true, false) => Check::fail(
            Some(host),
            NAME,
            format!("the login {user} is not root and no privilege escalation is configured"),
            "set targetUser = \"root\", or privilegeEscalation = [ \"sudo\" \"-H\" \"--\" ] for this host",
        ),
        (false, true) => Check::ok(
            Some(host),
            NAME,
            format!("`{}` gives root without a prompt", escalation.argv.join(" ")),
        ),
        (false, false) => escalation_failure(host, &user, escalation, &out),
    };
    (check, is_root.then_some(root))
}

fn escalation_failure(host: &str, user: &str, escalation: &Escalation, out: &Output) -> Check {
    const NAME: &str = "escalation";
    let tool = escalation.argv.join(" ");
    let err = out.stderr.trim();
    if err.contains("password is required")
        || err.contains("terminal is required")
        || err.contains("Authentication required")
    {
        return Check::fail(
            Some(host),
            NAME,
            format!("`{tool}` asks {user} for a password"),
            "run with --ask-sudo-password, or let the login escalate without one \
             (security.sudo.extraRules with NOPASSWD, or security.sudo.wheelNeedsPassword = false)",
        );
    }
    if err.contains("not found") || err.contains("No such file") {
        return Check::fail(
            Some(host),
            NAME,
            format!("`{tool}` is not installed on the host: {err}"),
            "install it on the host, or set privilegeEscalation to the tool it has",
        );
    }
    Check::fail(
        Some(host),
        NAME,
        format!("`{tool}` did not give {user} root: {}", if err.is_empty() { "no reason given" } else { err }),
        format!("allow {user} to run commands as root with it (e.g. add {user} to wheel), or set targetUser = \"root\""),
    )
}

/// The target's store, reached exactly as `copy` reaches it (`ssh-ng://`, Nix's own ssh).
async fn store_reach(host: &str, target: &Target) -> Check {
    const NAME: &str = "nix.store";
    let store = crate::nix::StoreUri::of(target);
    let mut cmd = tokio::process::Command::new("nix");
    cmd.args([
        "--extra-experimental-features",
        "nix-command",
        "store",
        "ping",
        "--store",
        &store.0,
    ])
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    // Nix's ssh gets the options whole, through a wrapper (NIX_SSHOPTS is split on spaces).
    let wrapper = tempfile::Builder::new()
        .prefix("nixdeploy-doctor-")
        .tempdir_in("/tmp")
        .map_err(anyhow::Error::from)
        .and_then(|dir| {
            crate::transport::nix_ssh_env(dir.path(), "store", &target.common_args())
                .map(|env| (dir, env))
        });
    let _dir = match wrapper {
        Ok((dir, env)) => {
            cmd.envs(env);
            dir
        }
        Err(e) => {
            return Check::fail(
                Some(host),
                NAME,
                format!("cannot prepare Nix's ssh: {e:#}"),
                "check that /tmp is writable",
            )
        }
    };
    match tokio::time::timeout(TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => {
            Check::ok(Some(host), NAME, format!("{} answers", store.0))
        }
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err
                .lines()
                .rev()
                .find(|l| l.starts_with("error"))
                .unwrap_or(err.trim());
            Check::fail(
                Some(host),
                NAME,
                format!("{} does not answer: {line}", store.0),
                "`nix-daemon --stdio` must start for the login: Nix installed and on the PATH of \
                 non-interactive ssh sessions, and /nix writable with free space (see the host's other checks)",
            )
        }
        Ok(Err(err)) => Check::fail(
            Some(host),
            NAME,
            format!("cannot run nix: {err}"),
            "install Nix on this machine",
        ),
        Err(_) => Check::fail(
            Some(host),
            NAME,
            format!("{} did not answer within {}s", store.0, TIMEOUT.as_secs()),
            "check that nix-daemon starts on the host and the connection is not filtered",
        ),
    }
}

fn trust(host: &str, facts: &BTreeMap<String, String>, login_is_root: bool) -> Check {
    const NAME: &str = "nix.trust";
    let user = facts.get("user").cloned().unwrap_or_default();
    if login_is_root || user == "root" {
        return Check::ok(
            Some(host),
            NAME,
            "root is trusted by Nix: unsigned paths are accepted",
        );
    }
    let trusted = facts.get("trusted_users").cloned().unwrap_or_default();
    let groups: Vec<&str> = facts
        .get("groups")
        .map(|g| g.split_whitespace().collect())
        .unwrap_or_default();
    let is_trusted = trusted
        .split_whitespace()
        .any(|t| t == "*" || t == user || t.strip_prefix('@').is_some_and(|g| groups.contains(&g)));
    if is_trusted {
        Check::ok(
            Some(host),
            NAME,
            format!("{user} is a trusted Nix user (trusted-users = {trusted})"),
        )
    } else {
        Check::warn(
            Some(host),
            NAME,
            format!("{user} is not a trusted Nix user (trusted-users = {trusted}): copied paths must be signed"),
            format!(
                "add {user} to nix.settings.trusted-users on the host, or sign paths \
                 (signingKey in the inventory; see docs/non-root.md)"
            ),
        )
    }
}

fn tools(host: &str, facts: &BTreeMap<String, String>) -> Check {
    const NAME: &str = "tools";
    let missing: Vec<&str> = WATCHDOG_TOOLS
        .iter()
        .copied()
        .filter(|t| facts.get(&format!("tool.{t}")).is_none_or(|p| p.is_empty()))
        .collect();
    if missing.is_empty() {
        Check::ok(Some(host), NAME, "every command activation runs is present")
    } else {
        Check::fail(
            Some(host),
            NAME,
            format!("missing on the login's PATH: {}", missing.join(", ")),
            "install them on the host (util-linux: flock, setsid; coreutils: timeout, mkfifo, tail, date; \
             Nix: nix-env); NixOS has them all",
        )
    }
}

fn run_writable(host: &str, root: &BTreeMap<String, String>) -> Check {
    const NAME: &str = "run";
    if root.get("run_writable").map(String::as_str) == Some("yes") {
        Check::ok(Some(host), NAME, "/run is writable as root")
    } else {
        Check::fail(
            Some(host),
            NAME,
            "/run is not writable as root: the activation watchdog keeps its state there",
            "mount a writable tmpfs on /run (every systemd system has one)",
        )
    }
}

fn store_writable(host: &str, root: &BTreeMap<String, String>) -> Check {
    const NAME: &str = "nix.writable";
    match root.get("store_writable").map(String::as_str) {
        Some("yes") => Check::ok(Some(host), NAME, "the Nix database is writable as root"),
        other => {
            let dir = other
                .and_then(|v| v.strip_prefix("no:"))
                .unwrap_or("/nix/var/nix/db");
            Check::fail(
                Some(host),
                NAME,
                format!("{dir} is not writable as root: /nix is read-only"),
                "remount /nix read-write (`mount -o remount,rw /nix`), or find what mounted it read-only",
            )
        }
    }
}

fn free_space(host: &str, facts: &BTreeMap<String, String>) -> Check {
    const NAME: &str = "nix.free";
    let Some(kib) = facts
        .get("nix_free_kib")
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return Check::warn(
            Some(host),
            NAME,
            "free space in /nix could not be read (`df -Pk /nix`)",
            "check that /nix exists on the host and df is installed",
        );
    };
    let human = format!("{:.1} GiB free in /nix", kib as f64 / (1024.0 * 1024.0));
    let fix = "free space (`nix-collect-garbage --delete-older-than 30d` on the host) or grow the file system of /nix";
    if kib < FAIL_FREE_KIB {
        Check::fail(
            Some(host),
            NAME,
            format!("only {} MiB free in /nix", kib / 1024),
            fix,
        )
    } else if kib < WARN_FREE_KIB {
        Check::warn(
            Some(host),
            NAME,
            format!("only {} MiB free in /nix", kib / 1024),
            fix,
        )
    } else {
        Check::ok(Some(host), NAME, human)
    }
}

/// The Nix system type of `uname -s`/`uname -m`.
fn nix_system(kernel: &str, machine: &str) -> Option<String> {
    let os = match kernel {
        "Linux" => "linux",
        "Darwin" => "darwin",
        _ => return None,
    };
    let cpu = match machine {
        "x86_64" | "amd64" => "x86_64",
        "aarch64" | "arm64" => "aarch64",
        "i686" | "i386" => "i686",
        "armv7l" => "armv7l",
        "armv6l" => "armv6l",
        "riscv64" => "riscv64",
        other => other,
    };
    Some(format!("{cpu}-{os}"))
}

fn system(host: &str, wanted: &str, facts: &BTreeMap<String, String>) -> Check {
    const NAME: &str = "system";
    let kernel = facts.get("kernel").map(String::as_str).unwrap_or("");
    let machine = facts.get("machine").map(String::as_str).unwrap_or("");
    match nix_system(kernel, machine) {
        Some(actual) if actual == wanted => Check::ok(Some(host), NAME, format!("{actual}, as in the inventory")),
        Some(actual) => Check::fail(
            Some(host),
            NAME,
            format!("the host runs {actual}, but the inventory builds {wanted} for it"),
            format!("set system = \"{actual}\" for this host (and build its configuration for {actual})"),
        ),
        None => Check::warn(
            Some(host),
            NAME,
            format!("unknown platform `{kernel} {machine}`"),
            "check that the host's system matches the inventory's",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_valid_shell() {
        crate::transport::assert_valid_shell(PROBE);
        crate::transport::assert_valid_shell(ROOT_PROBE);
    }

    #[test]
    fn the_watchdog_runs_only_tools_doctor_checks_for() {
        // The activation scripts' source: a tool dropped from them should be dropped here.
        let script = include_str!("../activation/script.rs");
        for tool in ["flock", "setsid", "timeout", "mkfifo", "tail", "nix-env"] {
            assert!(
                script.contains(tool),
                "{tool} is no longer used by activation"
            );
            assert!(WATCHDOG_TOOLS.contains(&tool));
        }
    }

    #[test]
    fn uname_maps_to_nix_systems() {
        assert_eq!(
            nix_system("Linux", "x86_64").as_deref(),
            Some("x86_64-linux")
        );
        assert_eq!(
            nix_system("Linux", "aarch64").as_deref(),
            Some("aarch64-linux")
        );
        assert_eq!(
            nix_system("Darwin", "arm64").as_deref(),
            Some("aarch64-darwin")
        );
        assert_eq!(nix_system("SunOS", "x86_64"), None);
    }

    #[test]
    fn sudo_and_doas_are_made_non_interactive() {
        let sudo = Escalation {
            argv: vec!["sudo".into(), "-H".into(), "--".into()],
        };
        assert!(sudo
            .wrap("true", Feed::NoPassword)
            .starts_with("sudo -n -H -- sh -c"));
        let doas = Escalation {
            argv: vec!["doas".into()],
        };
        assert!(doas
            .wrap("true", Feed::NoPassword)
            .starts_with("doas -n sh -c"));
        assert_eq!(Escalation::default().wrap("true", Feed::NoPassword), "true");
    }

    #[test]
    fn a_trusted_group_makes_its_members_trusted() {
        let facts: BTreeMap<String, String> = [
            ("user", "deploy"),
            ("groups", "deploy wheel"),
            ("trusted_users", "root @wheel"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(trust("h", &facts, false).status, super::super::Status::Ok);
        let mut untrusted = facts.clone();
        untrusted.insert("groups".into(), "deploy".into());
        assert_eq!(
            trust("h", &untrusted, false).status,
            super::super::Status::Warn
        );
    }
}
