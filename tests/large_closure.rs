//! A closure of thousands of store paths: the presence check (what `copy` would send, shown by
//! a dry run) and `nix copy`'s ssh options work past the size of one command-line argument.

mod common;

use std::process::Command;

use nixdeploy::fleet::HostName;
use nixdeploy::transport::{Connection, Target};

/// A store path referring to `n` small store paths (made by `builtins.toFile`: no build).
fn wide_closure(n: usize) -> String {
    let expr = format!(
        "builtins.toFile \"wide-{n}-{rev}\" (builtins.concatStringsSep \"\\n\" \
         (builtins.genList (i: builtins.toFile \"leaf-{rev}-${{toString i}}\" (toString i)) {n}))",
        rev = common::unique_rev()
    );
    let out = Command::new("nix")
        .args(common::NIX_FLAGS)
        .args(["eval", "--raw", "--impure", "--expr", &expr])
        .output()
        .expect("run nix eval");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_presence_check_lists_a_closure_of_thousands_of_paths() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = common::Sandbox::up(1);
    let top = wide_closure(3000);
    let target = Target {
        host: HostName::new("h1"),
        destination: "h1".into(),
        user: None,
        port: None,
        config: Some(sb.ssh_config()),
        options: vec!["-o".into(), "ServerAliveInterval 7".into()],
        system: "x86_64-linux".into(),
        local: false,
    };
    let control = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let missing = runtime.block_on(async {
        let conn = Connection::open(target, control.path(), None)
            .await
            .unwrap();
        let missing = nixdeploy::steps::missing_paths(&conn, &top).await;
        // And Nix's own ssh, given an option with a space, copies the whole closure.
        let env = conn.nix_env().unwrap();
        let copy = Command::new("nix")
            .args(common::NIX_FLAGS)
            .args(["copy", "--no-check-sigs", "--to", "ssh-ng://h1", &top])
            .envs(env)
            .output()
            .unwrap();
        conn.close().await;
        (missing, copy)
    });
    let (missing, copy) = missing;
    let missing = missing.expect("presence check");
    assert_eq!(missing.len(), 3001, "every leaf and the top are missing");
    assert!(missing.contains(&top));
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    assert!(sb.store_has("h1", &top));
}
