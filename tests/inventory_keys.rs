//! Keys declared per host in the inventory: `runbooks/apply.rhai` uploads them before and after
//! activation, to the right host only; a missing owner fails the host; a bad spec touches nothing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{Outcome, Sandbox};

/// The repository's own `runbooks/apply.rhai`.
fn apply_rhai() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/apply.rhai")
}

fn apply(sb: &Sandbox) -> Outcome {
    sb.nixdeploy(&["run"])
        .args(&[apply_rhai().as_os_str()])
        .args(&["--flake", &sb.flake()])
        .output()
}

/// Writes a secret file next to the sandbox and returns its absolute path.
fn secret_file(sb: &Sandbox, name: &str, content: &str) -> String {
    let path = sb.dir().parent().expect("sandbox parent").join(name);
    fs::write(&path, content).expect("write secret");
    path.display().to_string()
}

/// `owner:group mode` of a file as the host itself reports it.
fn stat_on_host(sb: &Sandbox, host: &str, path: &str) -> String {
    let out = sb.ssh(host, &format!("stat -c '%U:%G %a' {path}"));
    assert!(out.status.success(), "stat {path} on {host}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Gives every host a generation nobody has built yet, so activation really happens.
fn fresh_revs(sb: &Sandbox, hosts: &[&str]) {
    sb.edit_fleet(|f| {
        for h in hosts {
            f["hosts"][*h]["rev"] = common::unique_rev().into();
        }
    });
}

#[test]
fn inventory_keys_land_on_their_host_only_with_exact_content_and_mode() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    let db = secret_file(&sb, "db.secret", "db-secret-content\n");
    let late = secret_file(&sb, "late.secret", "late-secret-content");
    fresh_revs(&sb, &["h1", "h2"]);
    sb.edit_fleet(|f| {
        f["hosts"]["h1"]["keys"] = serde_json::json!({
            "db.key": { "keyFile": db, "user": "root", "permissions": "0400" },
            "late.key": { "keyFile": late, "uploadAt": "post-activation" },
        });
    });

    let out = apply(&sb);
    out.assert_success();

    let keys = sb.host_root("h1").join("run/keys");
    assert_eq!(
        fs::read_to_string(keys.join("db.key")).unwrap(),
        "db-secret-content\n"
    );
    assert_eq!(stat_on_host(&sb, "h1", "/run/keys/db.key"), "root:root 400");
    assert_eq!(
        fs::read_to_string(keys.join("late.key")).unwrap(),
        "late-secret-content"
    );
    assert_eq!(
        stat_on_host(&sb, "h1", "/run/keys/late.key"),
        "root:root 600"
    );
    for k in ["db.key", "late.key"] {
        assert!(
            !sb.host_root("h2").join("run/keys").join(k).exists(),
            "h2 got h1's {k}: {out}"
        );
    }
    assert!(!format!("{out}").contains("secret-content"), "{out}");
}

#[test]
fn an_inventory_key_owner_that_exists_after_activation_gets_the_key() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let file = secret_file(&sb, "svc.secret", "svc");
    fresh_revs(&sb, &["h1"]);
    sb.edit_fleet(|f| {
        f["hosts"]["h1"]["keys"] = serde_json::json!({
            "svc.key": { "keyFile": file, "user": "nobody", "group": "nogroup", "permissions": "0440" },
        });
    });
    apply(&sb).assert_success();
    assert_eq!(
        stat_on_host(&sb, "h1", "/run/keys/svc.key"),
        "nobody:nogroup 440"
    );
}

#[test]
fn an_inventory_key_owner_still_missing_after_activation_fails_the_host() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let file = secret_file(&sb, "ghost.secret", "ghost");
    fresh_revs(&sb, &["h1"]);
    sb.edit_fleet(|f| {
        f["hosts"]["h1"]["keys"] = serde_json::json!({
            "ghost.key": { "keyFile": file, "user": "nixdeploy-test-missing", "group": "root" },
        });
    });
    let out = apply(&sb);
    out.assert_code(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("still do not exist"), "{out}");
    assert!(text.contains("nixdeploy-test-missing"), "{out}");
    // Uploaded owned by root until then, never left to the wrong owner.
    assert_eq!(
        stat_on_host(&sb, "h1", "/run/keys/ghost.key"),
        "root:root 600"
    );
}

#[test]
fn an_invalid_inventory_key_spec_fails_apply_before_any_host_is_touched() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    let file = secret_file(&sb, "bad.secret", "bad");
    fresh_revs(&sb, &["h1", "h2"]);
    sb.edit_fleet(|f| {
        f["hosts"]["h2"]["keys"] = serde_json::json!({
            "bad.key": { "keyFile": file, "permissions": "0999" },
        });
    });
    let stores: Vec<_> = ["h1", "h2"].iter().map(|h| sb.store_paths(h)).collect();
    let systems: Vec<_> = ["h1", "h2"].iter().map(|h| sb.current_system(h)).collect();

    let out = apply(&sb);
    out.assert_failure();
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("bad.key") && text.contains("octal"), "{out}");
    for (i, h) in ["h1", "h2"].iter().enumerate() {
        assert_eq!(sb.store_paths(h), stores[i], "{h}'s store changed: {out}");
        assert_eq!(sb.current_system(h), systems[i], "{h} was activated: {out}");
    }
}
