//! The Rhai stdlib (`rollout`, `canary`, `checks`, `builders`) and the example runbooks, run for
//! real: pure helpers asserted from Rhai, then canary, rolling and cross-arch deploys on a sandbox.

mod common;

use std::path::PathBuf;

use common::Sandbox;

/// Writes `text` as a runbook in the sandbox's temp dir and returns its path.
fn runbook(sb: &Sandbox, name: &str, text: &str) -> PathBuf {
    let path = sb.dir().parent().unwrap().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn example(name: &str) -> String {
    format!("{}/runbooks/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs a runbook on the sandbox's flake with extra arguments.
fn run(sb: &Sandbox, path: &str, extra: &[&str]) -> common::Outcome {
    sb.nixdeploy(&["run", path, "--flake", &sb.flake()])
        .args(extra)
        .output()
}

/// Each host's toplevel as the flake now says, built on the machine.
fn toplevels(sb: &Sandbox, n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| sb.build_toplevel(&format!("h{i}")))
        .collect()
}

fn bump_all_revs(sb: &Sandbox, n: usize) {
    sb.edit_fleet(|f| {
        for i in 1..=n {
            let h = &mut f["hosts"][format!("h{i}")];
            let rev = h["rev"].as_u64().unwrap_or(1) + 1;
            h["rev"] = rev.into();
        }
    });
}

const PURE_ASSERTS: &str = r#"
import "rollout" as rollout;
import "canary" as canary;
import "checks" as checks;

fn expect(what, got, want) {
    if got != want { throw `${what}: got ${got}, want ${want}`; }
}

expect("count_of 10%", rollout::count_of("10%", 10), 1);
expect("count_of 15%", rollout::count_of("15%", 10), 2);
expect("count_of 1% floor to 1", rollout::count_of("1%", 10), 1);
expect("count_of 100%", rollout::count_of("100%", 7), 7);
expect("count_of count", rollout::count_of(3, 10), 3);
expect("count_of too many", rollout::count_of(30, 10), 10);

let all = hosts();
let waves = rollout::waves_of(all, [1, "50%", "100%"]);
expect("wave count", waves.len(), 3);
expect("wave 1", names(waves[0]), ["h1"]);
expect("wave 2", names(waves[1]), ["h2", "h3"]);
expect("wave 3", names(waves[2]), ["h4", "h5", "h6"]);
let rest = rollout::waves_of(all, [2, 2]);
expect("leftover wave", rest.len(), 2);
expect("leftover hosts", names(rest[1]), ["h3", "h4", "h5", "h6"]);
expect("dropped empty waves", rollout::waves_of(all, ["10%", 1, 6]).len(), 2);

expect("allowed 0", rollout::allowed(0, 6), 0);
expect("allowed 2", rollout::allowed(2, 6), 2);
expect("allowed 50%", rollout::allowed("50%", 5), 2);
expect("allowed 10% of 6", rollout::allowed("10%", 6), 0);

expect("canary tagged", names(canary::pick(all, 3)), ["h1"]);
let untagged = all.filter(|h| !h.has_tag("canary"));
expect("canary by count", names(canary::pick(untagged, 2)), ["h2", "h3"]);
expect("canary count capped", names(canary::pick(untagged, 99)).len(), 5);

let v = checks::run(hosts("h1,h2"), [checks::command("test $(hostname) = h1")]);
expect("checks ok", v.ok, false);
expect("checks healthy", v.healthy, ["h1"]);
expect("checks failed", v.failed, ["h2"]);
if !("h2" in v.reasons) { throw "no reason for h2"; }
let good = checks::run(host("h1"), [checks::command("true"), checks::tcp(22)]);
expect("checks good", good.ok, true);
"#;

#[test]
fn stdlib_helpers_behave_as_documented_when_called_from_rhai() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(6);
    let path = runbook(&sb, "pure.rhai", PURE_ASSERTS);
    let out = run(&sb, path.to_str().unwrap(), &[]);
    out.assert_success();
}

#[test]
fn a_healthy_canary_is_soaked_then_promoted_in_waves() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(10);
    let want = toplevels(&sb, 10);
    let out = run(&sb, &example("canary.rhai"), &["--set", "soak=2"]);
    out.assert_success();
    let text = format!("{}{}", out.stdout, out.stderr);
    let canary = text.find("canary: [\"h1\"]").expect("canary line");
    let w1 = text.find("wave 1/").expect("wave 1");
    let w2 = text.find("wave 2/").expect("wave 2");
    let w3 = text.find("wave 3/").expect("wave 3");
    assert!(canary < w1 && w1 < w2 && w2 < w3, "out of order:\n{text}");
    for (i, path) in want.iter().enumerate() {
        let h = format!("h{}", i + 1);
        assert_eq!(sb.current_system(&h).as_deref(), Some(path.as_str()), "{h}");
    }
}

#[test]
fn an_unhealthy_canary_rolls_back_and_no_other_host_is_touched() {
    if !common::skip_unless_root() {
        return;
    }
    let n = 4;
    let sb = Sandbox::up(n);
    run(&sb, &example("apply.rhai"), &[]).assert_success();
    let before = toplevels(&sb, n);
    bump_all_revs(&sb, n);
    sb.set_behavior("h1", "unhealthy");
    let gens: Vec<_> = (2..=n)
        .map(|i| sb.profile_generations(&format!("h{i}")))
        .collect();
    let stores: Vec<_> = (2..=n).map(|i| sb.store_paths(&format!("h{i}"))).collect();

    // The HTTP health check is opt-in in the shipped canary runbook.
    let out = run(
        &sb,
        &example("canary.rhai"),
        &[
            "--set",
            "soak=2",
            "--set",
            "health=http://127.0.0.1:8080/health",
        ],
    );
    out.assert_failure();
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("canary deploy stopped at the"), "{out}");
    assert_eq!(
        sb.current_system("h1").as_deref(),
        Some(before[0].as_str()),
        "{out}"
    );
    for i in 2..=n {
        let h = format!("h{i}");
        assert_eq!(sb.profile_generations(&h), gens[i - 2], "{h} generations");
        assert_eq!(sb.store_paths(&h), stores[i - 2], "{h} store");
        assert_eq!(
            sb.current_system(&h).as_deref(),
            Some(before[i - 1].as_str())
        );
    }
}

#[test]
fn a_wave_over_max_fail_is_rolled_back_and_later_waves_stay_untouched() {
    if !common::skip_unless_root() {
        return;
    }
    let n = 6;
    let sb = Sandbox::up(n);
    run(&sb, &example("apply.rhai"), &[]).assert_success();
    let before = toplevels(&sb, n);
    bump_all_revs(&sb, n);
    // h4 is in wave 2 (h3, h4): its health command fails.
    let command = "test $(hostname) != h4";
    let after = toplevels(&sb, n);

    let out = run(
        &sb,
        &example("rolling.rhai"),
        &["--set", "batch=2", "--set", &format!("command={command}")],
    );
    out.assert_failure();
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("rollout stopped at wave 2"), "{out}");
    assert_eq!(
        sb.current_system("h1").as_deref(),
        Some(after[0].as_str()),
        "{out}"
    );
    assert_eq!(sb.current_system("h2").as_deref(), Some(after[1].as_str()));
    for i in [3, 4] {
        let h = format!("h{i}");
        assert_eq!(
            sb.current_system(&h).as_deref(),
            Some(before[i - 1].as_str()),
            "{h}: {out}"
        );
    }
    for i in [5, 6] {
        let h = format!("h{i}");
        assert!(!sb.store_has(&h, &after[i - 1]), "{h} got the new toplevel");
        assert_eq!(
            sb.current_system(&h).as_deref(),
            Some(before[i - 1].as_str())
        );
    }
}

const CROSS: &str = r#"
import "builders" as builders;
let b = builders::build_all(hosts(), #{});
if !b.ok { throw `build failed: ${b.errors}`; }
let a = activate(copy(b));
if !a.ok { throw `deploy failed: ${a.errors}`; }
"#;

#[test]
fn an_aarch64_host_is_built_on_the_builder_and_an_unbuildable_one_fails_first() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(2).builders(1).up();
    // A revision never built before: the machine's store is shared by every test and run.
    let rev = common::unique_rev();
    sb.edit_fleet(|f| {
        f["hosts"]["h2"]["system"] = "aarch64-linux".into();
        f["hosts"]["h2"]["rev"] = rev.into();
    });
    let path = runbook(&sb, "cross.rhai", CROSS);
    let out = run(&sb, path.to_str().unwrap(), &["--on", "h1,h2"]);
    out.assert_success();
    let h2 = sb.current_system("h2").expect("h2 has a system");
    assert!(sb.store_has("b1", &h2), "b1 did not build {h2}: {out}");
    assert!(h2.contains("nixos-system-h2"));

    sb.edit_fleet(|f| {
        f["hosts"]["h1"]["system"] = "riscv64-linux".into();
        f["hosts"]["h2"]["rev"] = 5.into();
    });
    let stores: Vec<_> = ["h1", "h2", "b1"]
        .iter()
        .map(|h| sb.store_paths(h))
        .collect();
    let out = run(&sb, path.to_str().unwrap(), &["--on", "h1,h2"]);
    out.assert_failure();
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("no way to build h1") && text.contains("riscv64-linux"),
        "{out}"
    );
    for (h, before) in ["h1", "h2", "b1"].iter().zip(stores) {
        assert_eq!(sb.store_paths(h), before, "{h}'s store changed");
    }
}
