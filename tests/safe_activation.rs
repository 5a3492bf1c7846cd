//! Safe activation end to end: automatic and magic rollback, deploy locks, manual confirmation,
//! operator gates and a deployer killed mid-window, asserted on what the sandbox hosts show.

mod common;

use std::time::{Duration, Instant};

use common::background::BackgroundRun;
use common::rollback::{
    assert_back_on, assert_rolled_back_and_answering, deployed_then_set_behavior,
};
use common::{eventually, run, runbook};

/// Activates everything with a short confirm timeout and fails on any host that fails.
const APPLY: &str = r#"
let r = activate(copy(build(hosts())), #{ confirm_timeout: 5 });
if !r.ok { throw `activate failed on ${r.failed}`; }
"#;

#[test]
fn failing_activation_rolls_back_to_the_previous_generation() {
    if !common::skip_unless_root() {
        return;
    }
    let (sb, before) = deployed_then_set_behavior(1, "fail-activation");
    let gens_before = sb.profile_generations("h1");

    let book = runbook(
        &sb,
        "deploy.rhai",
        "activate(copy(build(hosts())), #{ confirm_timeout: 5 });",
    );
    let out = run(&sb, &book, &[]);

    out.assert_code(1);
    assert_eq!(sb.current_system("h1").as_ref(), Some(&before[0]), "{out}");
    assert_eq!(
        sb.profile_generations("h1"),
        gens_before,
        "failed generation left behind: {out}"
    );
    assert_eq!(sb.profile_target("h1").as_ref(), Some(&before[0]));
    let tried = sb.activations("h1");
    assert!(
        tried.iter().any(|a| !a.ends_with(&before[0])),
        "the new system was never tried: {tried:?}"
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("rolled back"),
        "{out}"
    );
}

#[test]
fn hosts_whose_new_generation_cuts_the_network_roll_themselves_back() {
    if !common::skip_unless_root() {
        return;
    }
    let hosts = ["h1", "h2", "h3"];
    let (sb, before) = deployed_then_set_behavior(3, "cut-network");

    let book = runbook(
        &sb,
        "cut.rhai",
        "activate(copy(build(hosts())), #{ confirm_timeout: 5 });",
    );
    let started = Instant::now();
    let out = run(&sb, &book, &["--json"]);

    assert!(!out.status.success(), "{out}");
    for (h, old) in hosts.iter().zip(&before) {
        assert_rolled_back_and_answering(&sb, h, old, Duration::from_secs(5), &out);
    }
    // Each watchdog acted alone: the whole fleet is back well before hosts×timeout.
    assert!(
        started.elapsed() < Duration::from_secs(5 * 3 + 20),
        "took {:?}",
        started.elapsed()
    );
    let rolled: Vec<String> = out
        .json_lines()
        .iter()
        .filter(|e| e.to_string().contains("rolled"))
        .map(|e| e.to_string())
        .collect();
    for h in hosts {
        assert!(
            rolled.iter().any(|e| e.contains(&format!("\"{h}\""))),
            "no rolled-back event for {h}: {out}"
        );
    }
}

/// The slow first run: activates with manual confirmation, holds the window open, confirms.
const SLOW: &str = r#"
let r = activate(copy(build(hosts())), #{ confirm: "manual", confirm_timeout: 20 });
sleep(8);
confirm(r);
"#;

#[test]
fn a_second_run_is_refused_while_the_first_holds_the_deploy_lock() {
    if !common::skip_unless_root() {
        return;
    }
    let (sb, before) = deployed_then_set_behavior(1, "ok");
    let slow = runbook(&sb, "slow.rhai", SLOW);
    let first = BackgroundRun::start(&sb, &slow, &[]);
    assert!(
        eventually(Duration::from_secs(60), || sb
            .current_system("h1")
            .is_some_and(|s| s != before[0])),
        "the first run never activated"
    );

    // The second run wants yet another generation, so it must take the lock.
    sb.set_behavior("h1", "ok");
    let held = sb.current_system("h1");
    let quick = runbook(&sb, "quick.rhai", APPLY);
    let second = run(&sb, &quick, &[]);
    // The refusal stops the host at `copy`; the run's exit status follows the runbook's
    // report handling (a report handed on to `activate` counts as looked at).
    assert_eq!(
        sb.current_system("h1"),
        held,
        "the second run changed h1: {second}"
    );
    let text = format!("{}{}", second.stdout, second.stderr);
    assert!(text.contains("locked by another deployment"), "{second}");
    assert_eq!(
        second.code(),
        Some(1),
        "a refused host is a failed host: {second}"
    );
    assert!(
        text.contains("slow.rhai") && text.contains("pid="),
        "holder not named: {second}"
    );

    first.finish(Duration::from_secs(120)).assert_success();
    let new = sb.current_system("h1").expect("h1 runs a system");
    assert_ne!(new, before[0], "the confirmed generation was not kept");
    run(&sb, &quick, &[]).assert_success();
    assert_ne!(
        sb.current_system("h1"),
        Some(new),
        "the run after the lock ended changed nothing"
    );
}

#[test]
fn manual_confirmation_after_a_passing_check_keeps_the_new_generation() {
    if !common::skip_unless_root() {
        return;
    }
    let (sb, before) = deployed_then_set_behavior(1, "ok");
    let book = runbook(
        &sb,
        "manual.rhai",
        r#"
let r = activate(copy(build(hosts())), #{ confirm: "manual", confirm_timeout: 5 });
let check = exec(r, "test -e /run/current-system/bin/switch-to-configuration");
if check.ok { confirm(r); } else { rollback(r); }
"#,
    );
    let out = run(&sb, &book, &[]);
    out.assert_success();
    let new = sb.current_system("h1").expect("h1 runs a system");
    assert_ne!(new, before[0], "{out}");
    // Past the confirm timeout the watchdog has not undone it.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(sb.current_system("h1"), Some(new.clone()));
    assert_eq!(sb.profile_target("h1"), Some(new));
}

#[test]
fn a_runbook_that_never_confirms_is_rolled_back_when_it_ends() {
    if !common::skip_unless_root() {
        return;
    }
    let (sb, before) = deployed_then_set_behavior(1, "ok");
    let gens = sb.profile_generations("h1");
    let book = runbook(
        &sb,
        "forget.rhai",
        r#"activate(copy(build(hosts())), #{ confirm: "manual", confirm_timeout: 30 });"#,
    );
    let started = Instant::now();
    let out = run(&sb, &book, &[]);
    out.assert_code(1);
    // Rolled back at the end of the run, not by the watchdog's 30 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}: {out}",
        started.elapsed()
    );
    assert_eq!(sb.current_system("h1").as_ref(), Some(&before[0]), "{out}");
    assert_eq!(sb.profile_generations("h1"), gens, "{out}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("rolled back"),
        "{out}"
    );
}

const GATED: &str = r#"
let built = build(hosts());
wait_for_confirm("copy to the fleet?", #{ timeout: 5 });
activate(copy(built), #{ confirm_timeout: 5 });
"#;

#[test]
fn a_gate_without_a_terminal_stops_the_run_before_the_next_step_touches_a_host() {
    if !common::skip_unless_root() {
        return;
    }
    let (sb, before) = deployed_then_set_behavior(1, "ok");
    let new = sb.build_toplevel("h1");
    let book = runbook(&sb, "gated.rhai", GATED);

    let out = run(&sb, &book, &[]);
    out.assert_code(5);
    assert!(!sb.store_has("h1", &new), "copy ran past the gate: {out}");
    assert_eq!(sb.current_system("h1").as_ref(), Some(&before[0]));

    run(&sb, &book, &["--yes"]).assert_success();
    assert!(sb.store_has("h1", &new));
    assert_eq!(sb.current_system("h1"), Some(new));
}

#[test]
fn killing_the_deployer_during_the_confirmation_window_rolls_every_host_back() {
    if !common::skip_unless_root() {
        return;
    }
    let hosts = ["h1", "h2", "h3"];
    let (sb, before) = deployed_then_set_behavior(3, "ok");
    let book = runbook(
        &sb,
        "killed.rhai",
        r#"
let r = activate(copy(build(hosts())), #{ confirm: "manual", confirm_timeout: 5 });
sleep(60);
confirm(r);
"#,
    );
    let deployer = BackgroundRun::start(&sb, &book, &[]);
    let all_new = eventually(Duration::from_secs(60), || {
        hosts
            .iter()
            .zip(&before)
            .all(|(h, old)| sb.current_system(h).is_some_and(|s| &s != old))
    });
    // SIGKILL: no destructor, no settle, no last word to the hosts.
    deployer.kill();
    assert!(all_new, "the hosts never showed the new system");

    for (h, old) in hosts.iter().zip(&before) {
        assert_back_on(
            &sb,
            h,
            old,
            Duration::from_secs(15),
            "the deployer was killed",
        );
        assert_eq!(sb.profile_target(h).as_ref(), Some(old), "{h}'s profile");
    }
}

#[test]
fn an_activation_right_after_a_copy_asks_the_host_again_when_a_command_ran_in_between() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = common::Sandbox::up(1);
    sb.fresh_revs();
    let old = common::rollback::deploy_baseline(&sb, &["h1"]).remove(0);
    sb.fresh_revs();
    let new = common::rollback::deploy_baseline(&sb, &["h1"]).remove(0);
    assert_ne!(old, new);

    // copy finds h1 running the new system (nothing to send); then a command puts the old one
    // back. The activation right after must see that, not trust what copy saw a moment ago.
    let book = runbook(
        &sb,
        "copy-exec-activate.rhai",
        &format!(
            "let c = copy(build(hosts()));\n\
             let e = exec(hosts(), \"{old}/bin/switch-to-configuration test\");\n\
             if !e.ok {{ throw `exec failed: ${{e.errors}}`; }}\n\
             let r = activate(c, #{{ settle: 0 }});\n\
             if !r.ok {{ throw `activate failed: ${{r.errors}}`; }}\n"
        ),
    );
    let out = run(&sb, &book, &[]);
    out.assert_success();
    out.assert_stderr_contains("1 host(s): 1 deployed");
    assert!(!out.stderr.contains("activate skipped"), "{out}");
    assert_eq!(sb.current_system("h1").as_ref(), Some(&new), "{out}");
}
