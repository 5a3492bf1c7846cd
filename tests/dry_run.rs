//! `--dry-run`: the plan it prints is exactly what a real run then does, and it changes nothing.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::Sandbox;

fn apply() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("runbooks/apply.rhai")
        .display()
        .to_string()
}

/// Puts `host` on its current system with the sandbox's own tools (build, copy,
/// switch-to-configuration), so no nixdeploy watchdog is left holding the host's activation lock.
fn deploy_by_hand(sb: &Sandbox, host: &str) -> String {
    let toplevel = sb.build_toplevel(host);
    assert!(sb.nix_copy(host, &toplevel).status.success());
    let out = sb.ssh(
        host,
        &format!("{toplevel}/bin/switch-to-configuration switch"),
    );
    assert!(out.status.success(), "{out:?}");
    toplevel
}

/// Everything a dry run must leave alone on a host.
fn snapshot(sb: &Sandbox, host: &str) -> (BTreeSet<String>, Vec<u32>, Option<String>, String) {
    let keys = sb.ssh(host, "ls -laR /run/keys 2>/dev/null; true");
    (
        sb.store_paths(host),
        sb.profile_generations(host),
        sb.current_system(host),
        String::from_utf8_lossy(&keys.stdout).into_owned(),
    )
}

/// The `copy would send` paths the dry run printed for `host`.
fn planned_paths(stdout: &str, host: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with(&format!("plan for {host}:")))
        .skip(2)
        .take_while(|l| l.starts_with("    /nix/store/"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The closure diff lines the dry run printed for `host`.
fn planned_diff(stdout: &str, host: &str) -> String {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with(&format!("plan for {host}:")))
        .skip_while(|l| l.trim() != "closure diff:")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_dry_run_lists_exactly_the_paths_a_real_run_copies_and_changes_nothing() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    let hosts = ["h1", "h2"];
    for h in hosts {
        deploy_by_hand(&sb, h);
    }
    sb.edit_fleet(|f| {
        for h in hosts {
            let rev = f["hosts"][h]["rev"].as_u64().unwrap_or(1) + 1;
            f["hosts"][h]["rev"] = rev.into();
        }
    });
    let (flake, runbook) = (sb.flake(), apply());
    let before: Vec<_> = hosts.iter().map(|h| snapshot(&sb, h)).collect();

    let dry = sb
        .nixdeploy(&["run", &runbook, "--flake", &flake, "--dry-run", "--yes"])
        .output();
    dry.assert_success();
    let after: Vec<_> = hosts.iter().map(|h| snapshot(&sb, h)).collect();
    assert_eq!(before, after, "the dry run changed a host");

    let planned: Vec<_> = hosts
        .iter()
        .map(|h| planned_paths(&dry.stdout, h))
        .collect();
    for (h, p) in hosts.iter().zip(&planned) {
        assert!(!p.is_empty(), "{h}: nothing planned:\n{}", dry.stdout);
    }

    sb.nixdeploy(&["run", &runbook, "--flake", &flake, "--yes"])
        .output()
        .assert_success();
    for ((h, was), planned) in hosts.iter().zip(&before).zip(&planned) {
        let copied: BTreeSet<String> = sb.store_paths(h).difference(&was.0).cloned().collect();
        assert_eq!(
            &copied, planned,
            "{h}: the dry run's plan differs from what was copied"
        );
    }
}

#[test]
fn the_closure_diff_names_a_bumped_package_and_says_no_change_for_identical_closures() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    for h in ["h1", "h2"] {
        deploy_by_hand(&sb, h);
    }
    sb.edit_fleet(|f| {
        f["hosts"]["h1"]["packages"] = serde_json::json!({ "openssl": "3.0.14" });
    });
    let (flake, runbook) = (sb.flake(), apply());
    let dry = sb
        .nixdeploy(&["run", &runbook, "--flake", &flake, "--dry-run", "--yes"])
        .output();
    dry.assert_success();
    let h1 = planned_diff(&dry.stdout, "h1");
    assert!(h1.contains("- openssl 3.0.13"), "{h1}\n---\n{}", dry.stdout);
    assert!(h1.contains("+ openssl 3.0.14"), "{h1}");
    let h2 = planned_diff(&dry.stdout, "h2");
    assert_eq!(h2, "no change", "{}", dry.stdout);
}
