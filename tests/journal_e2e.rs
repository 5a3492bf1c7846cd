//! The journal a real run writes: one record per host, with the state `nixdeploy log` shows.

mod common;

use std::path::PathBuf;

fn apply() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("runbooks/apply.rhai")
        .display()
        .to_string()
}

#[test]
fn a_deploy_and_a_rolled_back_deploy_are_both_journalled_with_their_states() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = common::Sandbox::up(2);
    let (flake, runbook) = (sb.flake(), apply());
    let run = |args: &[&str]| {
        let mut argv = vec!["run", runbook.as_str(), "--flake", flake.as_str(), "--yes"];
        argv.extend_from_slice(args);
        sb.nixdeploy(&argv).output()
    };
    run(&["--on", "h1,h2"]).assert_success();
    let deployed = sb
        .current_system("h2")
        .expect("h2 runs a system after the deploy");
    let h1_before = sb
        .current_system("h1")
        .expect("h1 runs a system after the deploy");

    sb.set_behavior("h1", "fail-activation");
    run(&["--on", "h1"]).assert_code(1);
    assert_eq!(
        sb.current_system("h1"),
        Some(h1_before),
        "h1 rolled back to what it ran"
    );

    let log = sb.nixdeploy(&["log"]).output();
    log.assert_success();
    let table = log.stdout.clone();
    assert!(table.contains("deployed"), "{table}");
    assert!(table.contains("rolled back"), "{table}");

    let h2 = sb.nixdeploy(&["log", "h2", "--json"]).output();
    h2.assert_success();
    let records = h2.json_lines();
    assert_eq!(records.len(), 1, "{records:#?}");
    let first = &records[0];
    assert_eq!(first["state"], "deployed");
    assert_eq!(first["path_after"].as_str(), Some(deployed.as_str()));
    assert!(first["path_before"].is_null(), "{first}");
    assert!(first["generation"].as_u64().is_some(), "{first}");
    assert!(!first["user"].as_str().unwrap().is_empty());

    let h1 = sb.nixdeploy(&["log", "h1", "--json"]).output();
    h1.assert_success();
    let records = h1.json_lines();
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records[0]["state"], "deployed");
    let second = &records[1];
    assert_eq!(second["state"], "rolled back");
    assert_eq!(second["selector"], "h1");
    assert_eq!(second["path_after"], records[0]["path_after"], "{second}");
    assert!(second["message"].is_string(), "{second}");
    assert_ne!(first["run_id"], second["run_id"]);
}

#[test]
fn an_unchanged_host_is_journalled_with_its_system_generation_and_the_flakes_commit() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = common::Sandbox::up(1);
    // The sandbox flake as a clean git work tree: its commit is the run's flake revision.
    let repo = sb.dir().join("flake");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(&repo)
            .args(["-c", "user.email=t@example.org", "-c", "user.name=t"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "fleet"]);
    let commit = git(&["rev-parse", "HEAD"]);
    let (flake, runbook) = (repo.display().to_string(), apply());
    let run = || {
        sb.nixdeploy(&["run", runbook.as_str(), "--flake", flake.as_str()])
            .output()
            .assert_success();
    };
    run();
    run();

    let records = sb.nixdeploy(&["log", "h1", "--json"]).output().json_lines();
    assert_eq!(records.len(), 2, "{records:#?}");
    let (first, second) = (&records[0], &records[1]);
    assert_eq!(first["state"], "deployed");
    assert_eq!(second["state"], "unchanged");
    let running = sb.current_system("h1").expect("h1 runs its system");
    assert_eq!(second["path_before"].as_str(), Some(running.as_str()));
    assert_eq!(second["path_after"].as_str(), Some(running.as_str()));
    assert_eq!(second["generation"], first["generation"], "{second}");
    assert!(second["generation"].as_u64().is_some(), "{second}");
    assert_eq!(second["flake_revision"].as_str(), Some(commit.as_str()));
}
