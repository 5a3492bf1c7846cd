//! The state directory always belongs to the user running nixdeploy: with `HOME` unset it
//! comes from the password database's home, never from a path shared in /tmp.

use std::process::Command;

#[test]
fn with_home_unset_the_state_directory_is_under_the_users_own_home() {
    // `sandbox status` names the directory it looked in: `<state dir>/sandbox`.
    let out = Command::new(env!("CARGO_BIN_EXE_nixdeploy"))
        .args(["sandbox", "status"])
        .env_remove("HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("NIXDEPLOY_STATE_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let home = nix_home(uid);
    let expected = match &home {
        Some(home) => format!("{home}/.local/state/nixdeploy/sandbox"),
        None => format!("/tmp/nixdeploy-{uid}/sandbox"),
    };
    if out.status.code() == Some(4) {
        assert!(
            stderr.contains(&format!("no sandbox in {expected}")),
            "{stderr}"
        );
    }
    assert!(!stderr.contains("/tmp/nixdeploy-state"), "{stderr}");
}

/// This user's home from /etc/passwd, when it is a directory.
fn nix_home(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[2] == uid.to_string())
        .map(|f| f[5].to_string())
        .filter(|h| h != "/" && std::path::Path::new(h).is_dir())
}
