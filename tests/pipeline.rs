//! `deploy` on a real sandbox fleet: each host is activated as soon as its own copy is done
//! (a slow host holds back no other), and a host that fails a stage fails alone, its error
//! naming the stage, while the others deploy.

mod common;

use common::{run, runbook, skip_unless_root, Sandbox};
use serde_json::Value;

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
    sb.fresh_revs();
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
    sb.fresh_revs();
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

#[test]
fn the_first_interrupt_starts_no_new_stage_on_any_host() {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    sb.fresh_revs();
    // Copies long enough for the interrupt to arrive while the first one is going on.
    sb.edit_fleet(|v| {
        for (_, h) in v["hosts"].as_object_mut().unwrap() {
            h["uniqueKiB"] = serde_json::json!(64 * 1024);
        }
    });
    let stores: Vec<_> = ["h1", "h2", "h3"]
        .iter()
        .map(|h| sb.store_paths(h))
        .collect();
    let book = runbook(&sb, "deploy.rhai", "deploy(hosts());\n");
    let mut child = common::run_command(&sb, &book, &["--parallel", "1", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start nixdeploy");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let events = |lines: &Mutex<Vec<String>>| -> Vec<Value> {
        let lines = lines.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let copies_started = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["event"] == "step" && e["step"] == "copy" && e["state"] == "started")
            .filter_map(|e| e["host"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(
        common::eventually(Duration::from_secs(120), || !copies_started(&events(
            &lines
        ))
        .is_empty()),
        "no copy ever started"
    );
    // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = child.wait().expect("wait for nixdeploy");
    reader.join().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let all = events(&lines);
    assert_eq!(status.code(), Some(130), "{stderr}");
    let copied = copies_started(&all);
    assert_eq!(
        copied.len(),
        1,
        "copies started after the interrupt: {copied:?}"
    );
    assert!(
        !all.iter()
            .any(|e| e["step"] == "activate" && e["state"] == "started"),
        "an activation started after the interrupt: {stderr}"
    );
    for (h, before) in ["h1", "h2", "h3"].iter().zip(&stores) {
        if *h != copied[0] {
            assert_eq!(&sb.store_paths(h), before, "{h}'s store changed: {stderr}");
        }
        assert_eq!(sb.current_system(h), None, "{h} was activated: {stderr}");
    }
}
