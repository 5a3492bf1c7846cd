//! The shipped runbooks and the deploy primitives, run as a non-root login (`deploy`, with
//! passwordless sudo) on several sandbox hosts at once: apply, canary, keys, `exec` with sudo,
//! magic rollback after a network cut, and deploy locks.

mod common;

use std::time::Duration;

use common::background::hold_deploy_locks;
use common::rollback::assert_rolled_back_and_answering;
use common::{eventually, run, runbook, Sandbox};

fn example(name: &str) -> String {
    format!("{}/runbooks/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Every host logs in as `deploy` and gets a never-built generation.
fn as_deploy_with_fresh_revs(sb: &Sandbox) {
    sb.as_deploy();
    sb.fresh_revs();
}

fn hosts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("h{i}")).collect()
}

#[test]
fn apply_keys_and_sudo_exec_work_as_deploy_on_several_hosts() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(3).nix_daemons().up();
    as_deploy_with_fresh_revs(&sb);
    let out = run(&sb, example("apply.rhai").as_ref(), &[]);
    out.assert_success();
    for h in hosts(3) {
        sb.assert_runs_its_toplevel(&h, &out);
        assert_eq!(sb.profile_target(&h), sb.current_system(&h), "{h}");
        assert_eq!(sb.profile_generations(&h).len(), 1, "{h}");
    }
    let book = runbook(
        &sb,
        "keys.rhai",
        r#"
let k = upload_key(hosts(), #{ name: "api.token", text: "t0ken", user: "deploy", permissions: "0400" });
if !k.ok { throw `upload_key failed on ${k.failed}`; }
let x = exec(hosts(), "stat -c '%U %a' /run/keys/api.token; cat /run/keys/api.token", #{ sudo: true });
if !x.ok { throw `exec failed on ${x.failed}`; }
"#,
    );
    let out = run(&sb, &book, &[]);
    out.assert_success();
    for h in hosts(3) {
        let key = sb.host_root(&h).join("run/keys/api.token");
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "t0ken", "{h}");
        let owner = sb.ssh(&h, "stat -c '%U %a' /run/keys/api.token");
        assert_eq!(
            String::from_utf8_lossy(&owner.stdout).trim(),
            "deploy 400",
            "{h}"
        );
    }
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("deploy 400"), "{text}");
}

#[test]
fn canary_promotes_through_waves_as_deploy() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(4).nix_daemons().up();
    as_deploy_with_fresh_revs(&sb);
    let out = run(&sb, example("canary.rhai").as_ref(), &["--set", "soak=2"]);
    out.assert_success();
    for h in hosts(4) {
        sb.assert_runs_its_toplevel(&h, &out);
    }
}

#[test]
fn hosts_whose_network_is_cut_roll_themselves_back_as_deploy() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(3).nix_daemons().up();
    as_deploy_with_fresh_revs(&sb);
    run(&sb, example("apply.rhai").as_ref(), &[]).assert_success();
    let before: Vec<String> = hosts(3)
        .iter()
        .map(|h| sb.current_system(h).expect("a system"))
        .collect();
    sb.set_behavior_on(&["h1", "h2"], "cut-network");
    let book = runbook(
        &sb,
        "cut.rhai",
        "activate(copy(build(hosts(\"h1,h2\"))), #{ confirm_timeout: 5 });",
    );
    let out = run(&sb, &book, &[]);
    assert!(!out.status.success(), "{out}");
    for (h, old) in ["h1", "h2"].iter().zip(&before) {
        assert_rolled_back_and_answering(&sb, h, old, Duration::from_secs(20), &out);
    }
    assert_eq!(sb.current_system("h3").as_ref(), Some(&before[2]));
}

#[test]
fn a_second_deployer_is_refused_by_the_deploy_lock_as_deploy() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(2).nix_daemons().up();
    as_deploy_with_fresh_revs(&sb);
    let holder = hold_deploy_locks(&sb, &["h1", "h2"]);
    let out = run(&sb, example("apply.rhai").as_ref(), &[]);
    holder.kill();
    assert_eq!(out.code(), Some(1), "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("locked by another deployment"), "{out}");
    for h in hosts(2) {
        assert!(sb.current_system(&h).is_none(), "{h} was deployed: {out}");
    }
}

#[test]
fn import_copies_through_escalated_nix_store_import_to_hosts_without_a_daemon() {
    if !common::skip_unless_root() {
        return;
    }
    // No --nix-daemons: `deploy` cannot open these hosts' stores by itself.
    let sb = Sandbox::up(2);
    as_deploy_with_fresh_revs(&sb);
    let book = runbook(
        &sb,
        "import.rhai",
        r#"
let copied = copy(build(hosts()), #{ via: "import" });
if !copied.ok { throw `copy failed on ${copied.failed}`; }
let r = activate(copied, #{ confirm_timeout: 10 });
if !r.ok { throw `activate failed on ${r.failed}`; }
"#,
    );
    let out = run(&sb, &book, &[]);
    out.assert_success();
    for h in hosts(2) {
        sb.assert_runs_its_toplevel(&h, &out);
    }
    // Again: nothing is missing, nothing is sent.
    let again = run(&sb, &book, &[]);
    again.assert_success();
    let text = format!("{}{}", again.stdout, again.stderr);
    assert!(!text.contains("imported"), "{text}");
}

#[test]
fn an_exec_past_its_timeout_is_stopped_as_the_login_and_as_root() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    as_deploy_with_fresh_revs(&sb);
    let book = runbook(
        &sb,
        "slow.rhai",
        r#"
exec(hosts(), "sleep 301", #{ timeout: 1 });
exec(hosts(), "sleep 302", #{ timeout: 1, sudo: true });
"#,
    );
    let out = run(&sb, &book, &[]);
    assert!(!out.status.success(), "{out}");
    assert!(format!("{out}").contains("was stopped"), "{out}");
    for h in hosts(2) {
        let gone = |what: &str| {
            eventually(Duration::from_secs(10), || {
                !sb.ssh(&h, &format!("pgrep -f '^sleep {what}$'"))
                    .status
                    .success()
            })
        };
        assert!(gone("301"), "{h}: the login's command still runs");
        assert!(gone("302"), "{h}: the root command still runs");
    }
}
