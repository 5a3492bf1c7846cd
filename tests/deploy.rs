//! `nixdeploy run` on a real sandbox fleet: apply.rhai deploys each host its own system, a
//! second run changes nothing, `--on` confines the run, `exec` reports each host's own output,
//! and one unreachable host fails alone.

mod common;

use common::{skip_unless_root, Sandbox};

const APPLY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks/apply.rhai");

fn hosts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("h{i}")).collect()
}

#[test]
fn apply_deploys_each_host_its_own_system_and_a_second_run_is_a_no_op() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(5);
    sb.fresh_revs();
    sb.nixdeploy(&["run", APPLY, "--flake", &sb.flake()])
        .success();
    let mut systems = std::collections::BTreeSet::new();
    for h in hosts(5) {
        let expected = sb.build_toplevel(&h);
        assert_eq!(
            sb.current_system(&h).as_deref(),
            Some(expected.as_str()),
            "{h} runs its own toplevel"
        );
        assert_eq!(
            sb.profile_target(&h).as_deref(),
            Some(expected.as_str()),
            "{h}'s profile points at it"
        );
        assert_eq!(
            sb.profile_generations(&h).len(),
            1,
            "{h} has one generation"
        );
        // Test first, commit after confirmation: `test`, then `boot` once confirmed.
        assert_eq!(
            sb.activations(&h),
            [format!("test {expected}"), format!("boot {expected}")],
            "{h} ran switch-to-configuration test, then boot"
        );
        systems.insert(expected);
    }
    assert_eq!(systems.len(), 5, "every host got a different system");

    let stores: Vec<_> = hosts(5).iter().map(|h| sb.store_paths(h)).collect();
    let again = sb
        .nixdeploy(&["run", APPLY, "--flake", &sb.flake(), "--json"])
        .success();
    for (h, before) in hosts(5).iter().zip(stores) {
        assert_eq!(sb.profile_generations(h).len(), 1, "{h}: no new generation");
        assert_eq!(sb.store_paths(h), before, "{h}: nothing copied");
    }
    let finished = again
        .json_lines()
        .into_iter()
        .find(|e| e["event"] == "run_finished")
        .expect("run_finished event");
    for pair in finished["hosts"].as_array().unwrap() {
        assert_eq!(pair[1], "unchanged", "{pair}");
    }
}

#[test]
fn on_limits_the_hosts_touched() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    sb.fresh_revs();
    let untouched_before = sb.store_paths("h2");
    sb.nixdeploy(&["run", APPLY, "--flake", &sb.flake(), "--on", "h1,h3"])
        .success();
    assert!(sb.current_system("h1").is_some());
    assert!(sb.current_system("h3").is_some());
    assert_eq!(sb.current_system("h2"), None, "h2 was not activated");
    assert_eq!(
        sb.store_paths("h2"),
        untouched_before,
        "h2's store is untouched"
    );
}

#[test]
fn exec_returns_each_hosts_own_output_prefixed_live() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    let runbook = sb.dir().join("exec.rhai");
    std::fs::write(
        &runbook,
        r#"
let out = exec(hosts(), "hostname; echo oops >&2; exit 0");
for h in hosts() {
    let e = out[h.name];
    let said = e.stdout;
    said.trim();
    if said != h.name { throw `${h.name} said ${said}`; }
    if e.status != 0 || !e.stderr.contains("oops") { throw `bad entry for ${h.name}: ${e}`; }
}
let failing = exec(host("h2"), "exit 7");
if failing.ok || failing["h2"].status != 7 { throw "exit status lost"; }
"#,
    )
    .unwrap();
    let out = sb
        .nixdeploy(&["run", runbook.to_str().unwrap(), "--flake", &sb.flake()])
        .success();
    for h in hosts(3) {
        assert!(
            out.stderr.contains(&format!("{h:<4} | {h}")),
            "live line for {h}:\n{}",
            out.stderr
        );
    }
}

#[test]
fn unreachable_host_fails_alone_and_the_run_exits_non_zero() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    sb.fresh_revs();
    // Take h2 off the network from inside its namespace; it stays down for this test.
    let cut = sb.ssh("h2", "ip link set eth0 down >/dev/null 2>&1 &");
    let _ = cut;
    let out = sb
        .nixdeploy(&["run", APPLY, "--flake", &sb.flake()])
        .failure();
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("h2"), "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot reach h2")
            || out.stderr.contains("h2") && out.stderr.contains("failed")
    );
    for h in ["h1", "h3"] {
        assert_eq!(
            sb.current_system(h).as_deref(),
            Some(sb.build_toplevel(h).as_str()),
            "{h} deployed"
        );
    }
    assert_eq!(sb.current_system("h2"), None, "h2 untouched");
}
