//! `deploy` on a real sandbox fleet: each host is activated as soon as its own copy is done
//! (a slow host holds back no other), and a host that fails a stage fails alone, its error
//! naming the stage, while the others deploy.

mod common;

use common::{run, runbook, skip_unless_root, unique_rev, Sandbox};
use serde_json::Value;

/// Gives every host a fresh, never-built generation so each test really builds and copies.
fn fresh_revs(sb: &Sandbox) {
    let rev = unique_rev();
    sb.edit_fleet(|v| {
        for (_, h) in v["hosts"].as_object_mut().unwrap() {
            h["rev"] = serde_json::json!(rev);
        }
    });
}

/// The `time` of `host`'s `step` event in state `state`.
fn time_of(events: &[Value], host: &str, step: &str, state: &str) -> f64 {
    events
        .iter()
        .find(|e| {
            e["event"] == "step" && e["host"] == host && e["step"] == step && e["state"] == state
        })
        .and_then(|e| e["time"].as_f64())
        .unwrap_or_else(|| panic!("no {step} {state} event for {host}"))
}

#[test]
fn deploy_activates_a_fast_host_while_a_slow_hosts_copy_is_still_going() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    fresh_revs(&sb);
    // h2's closure is thousands of times larger than h1's: its copy is the slow one.
    sb.edit_fleet(|v| v["hosts"]["h2"]["uniqueKiB"] = serde_json::json!(192 * 1024));
    let book = runbook(
        &sb,
        "deploy.rhai",
        "let r = deploy(hosts());\nif !r.ok { throw `deploy failed on ${r.failed}`; }\n",
    );
    let out = run(&sb, &book, &["--json"]);
    out.assert_success();
    let events = out.json_lines();
    let fast_activates = time_of(&events, "h1", "activate", "started");
    let slow_copied = time_of(&events, "h2", "copy", "succeeded");
    assert!(
        fast_activates < slow_copied,
        "h1's activation started at {fast_activates}, after h2's copy ended at {slow_copied}: \
         the fast host waited for the slow one"
    );
    for h in ["h1", "h2"] {
        assert_eq!(
            sb.current_system(h).as_deref(),
            Some(sb.build_toplevel(h).as_str()),
            "{h} runs its own system"
        );
    }
}

#[test]
fn a_host_whose_copy_fails_fails_alone_with_the_stage_named_and_the_others_deploy() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    fresh_revs(&sb);
    sb.fault("h2", "readonly-store");
    let book = runbook(
        &sb,
        "deploy.rhai",
        r#"let r = deploy(hosts());
print(`h2 error: ${r["h2"].error}`);
print(`h1 state: ${r["h1"].state}, path: ${r["h1"].path}`);
print(`report: ${r.step} failed ${r.failed.len()}`);
"#,
    );
    let out = run(&sb, &book, &[]);
    out.assert_code(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("h2 error: copy: "), "{text}");
    assert!(text.contains("report: deploy failed 1"), "{text}");
    assert!(
        text.contains(&format!(
            "h1 state: succeeded, path: {}",
            sb.build_toplevel("h1")
        )),
        "{text}"
    );
    for h in ["h1", "h3"] {
        assert_eq!(
            sb.current_system(h).as_deref(),
            Some(sb.build_toplevel(h).as_str()),
            "{h} deployed"
        );
    }
    assert_eq!(sb.current_system("h2"), None, "h2 was never activated");
}
