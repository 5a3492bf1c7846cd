//! Evaluation on a real sandbox fleet: `--on` evaluates only the selected hosts, an evaluation
//! error fails that host alone while the others deploy, and the evaluation cache makes a rerun
//! against an unchanged flake evaluate nothing.

mod common;

use common::{skip_unless_root, unique_rev, Outcome, Sandbox};
use serde_json::Value;

const APPLY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks/apply.rhai");

/// Gives every host a fresh, never-built generation so each test really builds and copies.
fn fresh_revs(sb: &Sandbox) {
    let rev = unique_rev();
    sb.edit_fleet(|v| {
        for (_, h) in v["hosts"].as_object_mut().unwrap() {
            h["rev"] = serde_json::json!(rev);
        }
    });
}

/// The `evaluated` event of a `--json` run.
fn evaluated(out: &Outcome) -> Value {
    out.json_lines()
        .into_iter()
        .find(|e| e["event"] == "evaluated")
        .expect("an evaluated event")
}

/// Each host's final state from the `run_finished` event.
fn final_states(out: &Outcome) -> Vec<(String, String)> {
    let finished = out
        .json_lines()
        .into_iter()
        .find(|e| e["event"] == "run_finished")
        .expect("run_finished event");
    finished["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
        .collect()
}

#[test]
fn on_evaluates_only_the_selected_hosts_even_when_another_throws() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    fresh_revs(&sb);
    sb.edit_fleet(|f| f["hosts"]["h2"]["evalError"] = "h2 must never be evaluated".into());
    let flake = sb.flake();

    // `hosts` reads every host, the broken one included, and evaluates no toplevel.
    let rows = sb
        .nixdeploy(&["hosts", "--json", "--flake", &flake])
        .success()
        .json();
    assert_eq!(rows.as_array().unwrap().len(), 3);
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["drv_path"].is_null()));

    let out = sb
        .nixdeploy(&["run", APPLY, "--flake", &flake, "--on", "h1", "--json"])
        .success();
    assert_eq!(evaluated(&out)["hosts"], 1, "one toplevel evaluated");
    assert_eq!(
        sb.current_system("h1").as_deref(),
        Some(sb.build_toplevel("h1").as_str())
    );
    assert_eq!(sb.current_system("h2"), None);
}

#[test]
fn an_evaluation_error_on_one_host_leaves_the_others_deployed() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    fresh_revs(&sb);
    sb.edit_fleet(|f| f["hosts"]["h2"]["evalError"] = "h2 is broken on purpose".into());
    let out = sb
        .nixdeploy(&["run", APPLY, "--flake", &sb.flake(), "--json"])
        .output();
    out.assert_code(1);
    let states = final_states(&out);
    assert_eq!(
        states,
        [
            ("h1".into(), "deployed".into()),
            ("h2".into(), "failed".into()),
            ("h3".into(), "deployed".into())
        ]
    );
    let failed_step = out
        .json_lines()
        .into_iter()
        .find(|e| e["event"] == "step" && e["host"] == "h2" && e["step"] == "evaluate")
        .expect("a failed evaluate step on h2");
    let message = failed_step["message"].as_str().unwrap();
    assert!(message.contains("h2 is broken on purpose"), "{message}");
    assert!(
        message.contains("nixosConfigurations.h2.config.system.build.toplevel"),
        "{message}"
    );
    for h in ["h1", "h3"] {
        assert_eq!(
            sb.current_system(h).as_deref(),
            Some(sb.build_toplevel(h).as_str()),
            "{h} runs its own toplevel"
        );
    }
    assert_eq!(sb.current_system("h2"), None, "h2 was never touched");
}

#[test]
fn a_rerun_against_an_unchanged_flake_evaluates_nothing_and_a_change_only_what_it_touches() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    fresh_revs(&sb);
    let flake = sb.flake();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", APPLY, "--flake", flake.as_str(), "--json"];
        args.extend_from_slice(extra);
        sb.nixdeploy(&args).success()
    };
    let first = evaluated(&run(&[]));
    assert_eq!(
        (first["cached"].as_u64(), first["evaluated"].as_u64()),
        (Some(0), Some(3))
    );

    let again = evaluated(&run(&[]));
    assert_eq!(
        (again["cached"].as_u64(), again["evaluated"].as_u64()),
        (Some(3), Some(0))
    );

    // Changing the flake changes its narHash: every key misses, and only what the key covers
    // (the whole flake) is evaluated again.
    sb.edit_fleet(|f| f["hosts"]["h3"]["rev"] = unique_rev().into());
    let changed = evaluated(&run(&[]));
    assert_eq!(changed["evaluated"], 3);
    assert_eq!(
        sb.current_system("h3").as_deref(),
        Some(sb.build_toplevel("h3").as_str()),
        "h3 runs its new toplevel, not a cached one"
    );

    let bypass = evaluated(&run(&["--no-eval-cache", "--eval-jobs", "2"]));
    assert_eq!(
        (bypass["cached"].as_u64(), bypass["evaluated"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(bypass["evaluators"], 2);
}
