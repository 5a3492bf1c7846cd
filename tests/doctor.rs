//! `nixdeploy doctor`: every check passes on healthy sandbox hosts; each way a host can be
//! broken fails the specific check with a fix line; the report gates runbooks; nothing changes.

mod common;

use common::{nixdeploy, Sandbox};
use serde_json::Value;

/// The rows of a `doctor --json` report for `host` (`None`: the deploying machine).
fn rows<'a>(report: &'a Value, host: Option<&str>) -> Vec<&'a Value> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["host"].as_str() == host)
        .collect()
}

/// The one row of `check` for `host`.
fn row<'a>(report: &'a Value, host: &str, check: &str) -> &'a Value {
    rows(report, Some(host))
        .into_iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no {check} row for {host} in {report:#}"))
}

#[test]
fn every_check_passes_on_healthy_hosts_and_the_json_report_has_its_documented_shape() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    let out = sb
        .nixdeploy(&["doctor", "--flake", &sb.flake(), "--json"])
        .success();
    let report = out.json();
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["counts"]["fail"], 0);
    assert_eq!(report["counts"]["warn"], 0, "{report:#}");
    let deployer: Vec<&str> = rows(&report, None)
        .iter()
        .filter_map(|c| c["check"].as_str())
        .collect();
    for check in [
        "nix.version",
        "nix.flakes",
        "nix.store",
        "nix.build-users",
        "ssh.client",
        "inventory",
    ] {
        assert!(
            deployer.contains(&check),
            "deployer check {check} missing: {deployer:?}"
        );
    }
    for host in ["h1", "h2"] {
        let checks: Vec<&str> = rows(&report, Some(host))
            .iter()
            .filter_map(|c| c["check"].as_str())
            .collect();
        assert_eq!(
            checks,
            [
                "ssh.reach",
                "login",
                "escalation",
                "nix.store",
                "nix.trust",
                "tools",
                "run",
                "nix.writable",
                "nix.free",
                "system"
            ]
        );
        for c in rows(&report, Some(host)) {
            assert_eq!(c["status"], "ok", "{c:#}");
            assert!(c["fix"].is_null());
            assert!(c["detail"].as_str().is_some_and(|d| !d.is_empty()));
        }
    }
    // The table says the same.
    let table = sb.nixdeploy(&["doctor", "--flake", &sb.flake()]).success();
    table.assert_stdout_contains("0 warning(s), 0 failed");
}

#[test]
fn each_broken_host_fails_its_own_check_with_a_fix_and_the_exit_code_is_1() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(6);
    sb.fault("h1", "no-tools");
    sb.fault("h2", "full-store");
    sb.fault("h3", "readonly-store");
    sb.fault("h4", "wrong-host-key");
    sb.fault("h5", "sshd-down");
    let out = sb
        .nixdeploy(&["doctor", "--flake", &sb.flake(), "--json"])
        .output();
    out.assert_code(1);
    let report = out.json();
    assert_eq!(report["ok"], false);

    let expect = [
        ("h1", "tools", "flock, setsid"),
        ("h2", "nix.free", "free in /nix"),
        ("h3", "nix.writable", "read-only"),
        ("h4", "ssh.reach", "host key mismatch"),
        ("h5", "ssh.reach", "Connection refused"),
    ];
    for (host, check, detail) in expect {
        let c = row(&report, host, check);
        assert_eq!(c["status"], "fail", "{c:#}");
        assert!(c["detail"].as_str().unwrap().contains(detail), "{c:#}");
        assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "{c:#}");
    }
    // A changed host key is never accepted: nothing past the handshake was checked.
    assert_eq!(rows(&report, Some("h4")).len(), 1);
    // The healthy host is all ok, and the others fail only where they are broken.
    assert!(rows(&report, Some("h6"))
        .iter()
        .all(|c| c["status"] == "ok"));
    assert!(rows(&report, Some("h1"))
        .iter()
        .all(|c| c["status"] == "ok" || c["check"] == "tools"));
    assert!(rows(&report, Some("h3")).iter().all(|c| c["status"] == "ok"
        || ["nix.writable", "nix.store"].contains(&c["check"].as_str().unwrap())));

    // The table prints a fix line under each failure.
    let table = sb
        .nixdeploy(&["doctor", "--flake", &sb.flake(), "--on", "h1"])
        .output();
    table.assert_code(1);
    table.assert_stdout_contains("fix: install them on the host");
}

#[test]
fn doctor_changes_nothing_on_the_hosts_it_checks() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let before = sb.store_paths("h1");
    sb.nixdeploy(&["doctor", "--flake", &sb.flake()]).success();
    assert_eq!(sb.store_paths("h1"), before);
    assert!(sb.activations("h1").is_empty());
    assert!(sb.current_system("h1").is_none());
    assert!(!sb.host_root("h1").join("run/nixdeploy").exists());
}

#[test]
fn a_runbook_can_gate_on_the_doctor_report() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    sb.fault("h2", "no-tools");
    let book = common::runbook(
        &sb,
        "gate.rhai",
        r#"let d = doctor(hosts());
print(`failed: ${d.failed}`);
if !d.ok { throw `not ready: ${d.failed}`; }
exec(hosts(), "touch /run/gated");
"#,
    );
    let out = common::run(&sb, &book, &[]);
    out.assert_code(3);
    out.assert_stdout_contains("failed: [\"h2\"]");
    assert!(!sb.host_root("h1").join("run/gated").exists());
}

#[test]
fn an_inventory_that_does_not_evaluate_fails_the_inventory_check_and_no_host_is_contacted() {
    let dir = tempfile::TempDir::new().unwrap();
    std::fs::write(
        dir.path().join("flake.nix"),
        "{ outputs = _: { nixdeploy = { hosts.web-1 = { targetHost = \"192.0.2.1\"; tagz = []; }; }; }; }",
    )
    .unwrap();
    let flake = format!("path:{}", dir.path().display());
    let out = nixdeploy(&["doctor", "--flake", &flake, "--json"]).output();
    out.assert_code(1);
    let report = out.json();
    let inventory = rows(&report, None)
        .into_iter()
        .find(|c| c["check"] == "inventory")
        .expect("row");
    assert_eq!(inventory["status"], "fail");
    assert!(
        inventory["detail"].as_str().unwrap().contains("tagz"),
        "{inventory:#}"
    );
    assert!(rows(&report, Some("web-1")).is_empty());
}

#[test]
fn a_bad_selector_is_an_input_error() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let out = sb
        .nixdeploy(&["doctor", "--flake", &sb.flake(), "--on", "@"])
        .output();
    out.assert_code(4);
}
