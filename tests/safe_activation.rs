//! Safe activation end to end: automatic and magic rollback, deploy locks, manual confirmation,
//! operator gates and a deployer killed mid-window, asserted on what the sandbox hosts show.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Outcome, Sandbox};

/// Writes `body` as a runbook in the sandbox's temp dir and returns its path.
fn runbook(sb: &Sandbox, name: &str, body: &str) -> PathBuf {
    let path = sb.dir().parent().expect("sandbox parent").join(name);
    fs::write(&path, body).expect("write runbook");
    path
}

/// `nixdeploy run RUNBOOK --flake FLAKE extra…`, to completion.
fn run(sb: &Sandbox, book: &Path, extra: &[&str]) -> Outcome {
    sb.nixdeploy(&["run"])
        .args(&[book.as_os_str()])
        .args(&["--flake", &sb.flake()])
        .args(extra)
        .output()
}

/// Polls `cond` every 100 ms until it holds or `limit` passes; returns whether it held.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deploys the fleet as it is and returns each host's system afterwards.
fn deploy_baseline(sb: &Sandbox, hosts: &[&str]) -> Vec<String> {
    let book = runbook(sb, "apply.rhai", APPLY);
    let out = run(sb, &book, &[]);
    out.assert_success();
    hosts
        .iter()
        .map(|h| sb.current_system(h).unwrap_or_else(|| panic!("{h} runs no system: {out}")))
        .collect()
}

const APPLY: &str = r#"
let r = activate(copy(build(hosts())), #{ confirm_timeout: 5 });
if !r.ok { throw `activate failed on ${r.failed}`; }
"#;

#[test]
fn failing_activation_rolls_back_to_the_previous_generation() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let before = deploy_baseline(&sb, &["h1"]);
    let gens_before = sb.profile_generations("h1");
    sb.set_behavior("h1", "fail-activation");

    let book = runbook(&sb, "deploy.rhai", "activate(copy(build(hosts())), #{ confirm_timeout: 5 });");
    let out = run(&sb, &book, &[]);

    out.assert_code(1);
    assert_eq!(sb.current_system("h1").as_ref(), Some(&before[0]), "{out}");
    assert_eq!(sb.profile_generations("h1"), gens_before, "failed generation left behind: {out}");
    assert_eq!(sb.profile_target("h1").as_ref(), Some(&before[0]));
    let tried = sb.activations("h1");
    assert!(tried.iter().any(|a| !a.ends_with(&before[0])), "the new system was never tried: {tried:?}");
    assert!(format!("{}{}", out.stdout, out.stderr).contains("rolled back"), "{out}");
}
