//! Builds on sandbox hosts never disturb builds on the deploying machine.
//!
//! Regression: under load, the suite saw "builder ... failed due to signal 9 (Killed)". Each
//! sandbox host has its own `/nix` (so its own pool of build-user locks) but shares this
//! machine's users and processes. A host's Nix took build user `nixbld1` from its own empty pool
//! while the deployer's Nix was building as `nixbld1`, and Nix kills every process of a build
//! uid before using it. Hosts now build as root (`build-users-group =` in their nix.conf).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Sandbox, NIX_FLAGS};

/// A derivation built with the machine's static busybox (allowed: `sandbox = false`).
fn derivation(name: &str, script: &str) -> String {
    format!(
        "derivation {{ name = \"{name}\"; system = builtins.currentSystem; \
         builder = \"/bin/busybox\"; args = [ \"sh\" \"-c\" \"{script}\" ]; }}"
    )
}

/// Whether any process runs as a build user of the machine's `nixbld` group.
fn a_build_user_is_busy() -> bool {
    let out = Command::new("ps")
        .args(["-eo", "user="])
        .output()
        .expect("ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|u| u.trim().starts_with("nixbld"))
}

#[test]
fn a_build_on_a_sandbox_host_does_not_kill_a_build_running_on_the_deployer() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let rev = common::unique_rev();
    // On the deploying machine: a build that takes a moment, running as a nixbld user.
    let slow = derivation(&format!("slow-{rev}"), "sleep 3; echo ok > $out");
    let deployer = Command::new("nix")
        .args(NIX_FLAGS)
        .args(["build", "--no-link", "--impure", "--expr", &slow])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nix build");
    assert!(
        common::eventually(Duration::from_secs(20), a_build_user_is_busy),
        "the deployer's build never started"
    );
    // Meanwhile on a host: a build of its own.
    let quick = derivation(&format!("quick-{rev}"), "echo ok > $out");
    let on_host = sb.ssh(
        "h1",
        &format!(
            "nix build --no-link --impure --expr {}",
            shell_quote(&quick)
        ),
    );
    assert!(
        on_host.status.success(),
        "the host's build failed: {}",
        String::from_utf8_lossy(&on_host.stderr)
    );
    let out = deployer.wait_with_output().expect("wait for nix build");
    assert!(
        out.status.success(),
        "the deployer's build was disturbed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
