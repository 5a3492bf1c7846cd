//! Evaluation on a real sandbox fleet: `--on` evaluates only the selected hosts, an evaluation
//! error fails that host alone while the others deploy, and the evaluation cache makes a rerun
//! against an unchanged flake evaluate nothing.

mod common;

use common::{skip_unless_root, unique_rev, Outcome, Sandbox};
use serde_json::Value;

const APPLY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks/apply.rhai");

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
    sb.fresh_revs();
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
    sb.fresh_revs();
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
    sb.fresh_revs();
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

/// Reads a `--json` run's events as they come, until `until` matches one; returns them all.
fn read_events_until(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    until: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    for line in lines {
        let line = line.expect("read the run's stdout");
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let done = until(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
    panic!("the run ended before the awaited event; events: {seen:#?}");
}

#[test]
fn a_host_is_deployed_while_another_is_still_being_evaluated() {
    if !skip_unless_root() {
        return;
    }
    use std::io::{BufRead, Write};
    let sb = Sandbox::up(2);
    sb.fresh_revs();
    // h2's evaluation blocks on a FIFO until this test writes it.
    let gate = sb.dir().parent().unwrap().join("h2-gate");
    let status = std::process::Command::new("mkfifo")
        .arg(&gate)
        .status()
        .unwrap();
    assert!(status.success());
    sb.edit_fleet(|f| f["hosts"]["h2"]["evalGate"] = gate.display().to_string().into());
    let book = common::runbook(
        &sb,
        "one-by-one.rhai",
        "for h in hosts() { activate(copy(build(h))); }\n",
    );
    let mut child = common::run_command(&sb, &book, &["--json", "--eval-jobs", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // Should the run never get that far (a regression that waits for every evaluation first),
    // this opens the gate after a generous while, so the test fails instead of hanging.
    let opener = gate.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(300));
        let _ = std::fs::write(&opener, "timed out");
    });

    // h1 goes all the way through activation while h2's evaluation still waits on its gate.
    // With one evaluator both hosts are in one batch, one `nix eval`: h1 is handed over the
    // moment Nix announces its entry, not when the batch ends.
    let before_gate = read_events_until(&mut lines, |e| {
        e["event"] == "step"
            && e["host"] == "h1"
            && e["step"] == "activate"
            && e["state"] == "succeeded"
    });
    assert!(
        !before_gate
            .iter()
            .any(|e| e["event"] == "evaluated" || e["host"] == "h2"),
        "nothing of h2 before its evaluation: {before_gate:#?}"
    );
    assert_eq!(
        sb.current_system("h1").as_deref(),
        Some(sb.build_toplevel("h1").as_str()),
        "h1 runs its new system while h2 is still being evaluated"
    );

    // Opening the gate lets h2 evaluate, and it deploys too.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&gate)
        .unwrap()
        .write_all(b"open")
        .unwrap();
    let rest: Vec<Value> = read_events_until(&mut lines, |e| e["event"] == "run_finished");
    assert!(child.wait().unwrap().success(), "events: {rest:#?}");
    let evaluated = rest.iter().find(|e| e["event"] == "evaluated").unwrap();
    assert_eq!(evaluated["evaluated"], 2);
    // (Evaluating h2 here again would wait on the gate: its path comes from the run.)
    let deployed = rest
        .iter()
        .find(|e| e["event"] == "host_state" && e["host"] == "h2" && e["path"].is_string())
        .expect("h2's final state with its path");
    assert_eq!(
        sb.current_system("h2").as_deref(),
        deployed["path"].as_str()
    );
}
