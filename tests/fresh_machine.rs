//! A fresh Debian 12 machine — no `/nix`, no `/etc/nix`, no `nixbld` group, no `~/.ssh`, no sshd
//! host keys — can bring up a sandbox and deploy to it. The machine running the tests is not
//! fresh (earlier runs and the install script left all of that behind), so `fresh_machine.sh`
//! hides those things in a private mount namespace and runs the real binary there.

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn the_script_that_makes_a_fresh_view_is_valid_shell() {
    let status = Command::new("sh")
        .args(["-n", "tests/fresh_machine.sh"])
        .status()
        .expect("run sh -n");
    assert!(status.success());
}

#[test]
fn a_machine_without_nix_setup_ssh_keys_or_mount_points_deploys_a_sandbox() {
    if !common::skip_unless_root() {
        return;
    }
    let work = tempfile::TempDir::new().expect("temp dir");
    let repo = std::env::current_dir().expect("cwd");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh"])
        .arg(repo.join("tests/fresh_machine.sh"))
        .arg(work.path())
        .arg(common::BIN)
        .arg(&repo)
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the fresh-machine run failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("fresh: no /nix"), "{stdout}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("2 host(s): 2 deployed"), "{all}");
    for host in ["h1", "h2"] {
        let system = format!("{host} runs /nix/store/");
        let line = stdout.lines().find(|l| l.starts_with(&system));
        assert!(
            line.is_some_and(|l| l.ends_with(&format!("-nixos-system-{host}-1"))),
            "{host} does not run its new system:\n{stdout}"
        );
    }
    // Nothing leaked out of the private view: this machine's own setup is untouched.
    assert!(Path::new("/etc/nix").exists() || !Path::new("/nix").exists());
}
