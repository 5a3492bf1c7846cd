//! Deploy locks left behind by another run: refused while held (naming the holder), broken by
//! `--force-unlock` with a loud warning, and freed on their own once the holder is gone.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::background::hold_deploy_locks;
use common::{eventually, run, runbook, Sandbox};

const APPLY: &str = r#"
let r = activate(copy(build(hosts())), #{ confirm_timeout: 5 });
if !r.ok { throw `activate failed on ${r.failed}`; }
"#;

/// Whether h1's deploy lock is free right now.
fn lock_free(sb: &Sandbox) -> bool {
    sb.ssh("h1", "flock -n /run/nixdeploy/deploy.lock true")
        .status
        .success()
}

/// Gives h1 a generation nobody has built yet.
fn new_generation(sb: &Sandbox) {
    sb.edit_fleet(|f| f["hosts"]["h1"]["rev"] = common::unique_rev().into());
}

fn assert_refused_naming_the_holder(sb: &Sandbox, book: &Path) {
    let before = sb.current_system("h1");
    let out = run(sb, book, &[]);
    out.assert_code(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("locked by another deployment"), "{out}");
    assert!(
        text.contains("hold.rhai") && text.contains("pid="),
        "holder not named: {out}"
    );
    assert_eq!(
        sb.current_system("h1"),
        before,
        "refused run changed h1: {out}"
    );
}

/// With h1's lock held, a plain run for a new generation is refused naming the holder, and the
/// same run with `--force-unlock` breaks the lock and deploys.
fn assert_only_force_unlock_breaks_the_lock(sb: &Sandbox) {
    new_generation(sb);
    let book = runbook(sb, "apply.rhai", APPLY);
    assert_refused_naming_the_holder(sb, &book);
    assert_force_unlock_deploys(sb, &book);
}

fn assert_force_unlock_deploys(sb: &Sandbox, book: &Path) {
    let before = sb.current_system("h1");
    let out = run(sb, book, &["--force-unlock"]);
    out.assert_success();
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("--force-unlock: breaking the deploy lock of h1")
            && text.contains("hold.rhai"),
        "no loud warning naming the broken holder: {out}"
    );
    assert_ne!(
        sb.current_system("h1"),
        before,
        "h1 was not deployed: {out}"
    );
}

#[test]
fn a_lock_held_by_a_live_run_is_refused_and_broken_only_with_force_unlock() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let holder = hold_deploy_locks(&sb, &["h1"]);
    assert_only_force_unlock_breaks_the_lock(&sb);
    holder.kill();
}

#[test]
fn a_lock_left_by_a_frozen_run_is_refused_and_broken_only_with_force_unlock() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let holder = hold_deploy_locks(&sb, &["h1"]);
    // SIGSTOP: the run's connection stays open but sends no heartbeat — a lock left behind.
    holder.signal(libc::SIGSTOP);
    assert_only_force_unlock_breaks_the_lock(&sb);
    holder.kill();
}

#[test]
fn a_lock_left_by_a_frozen_run_expires_after_its_last_heartbeat() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let holder = hold_deploy_locks(&sb, &["h1"]);
    holder.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    assert!(
        !lock_free(&sb),
        "the lock ended while its holder's connection was open"
    );
    assert!(
        eventually(Duration::from_secs(40), || lock_free(&sb)),
        "h1's lock still held {:?} after its holder froze",
        frozen.elapsed()
    );
    // 30 s expiry after the last heartbeat, which came at most 5 s before the freeze.
    assert!(
        frozen.elapsed() >= Duration::from_secs(20),
        "{:?}",
        frozen.elapsed()
    );
    eprintln!("lock expired {:?} after SIGSTOP", frozen.elapsed());
    holder.kill();
    deploys_now(&sb);
}

#[test]
fn a_lock_ends_as_soon_as_a_killed_holder_s_connection_closes() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    hold_deploy_locks(&sb, &["h1"]).kill();
    let killed = Instant::now();
    assert!(
        eventually(Duration::from_secs(40), || lock_free(&sb)),
        "h1's lock still held {:?} after its holder was killed",
        killed.elapsed()
    );
    eprintln!("lock freed {:?} after SIGKILL", killed.elapsed());
    deploys_now(&sb);
}

/// A plain run (no `--force-unlock`) deploys a new generation to h1.
fn deploys_now(sb: &Sandbox) {
    new_generation(sb);
    let before = sb.current_system("h1");
    let book = runbook(sb, "apply.rhai", APPLY);
    run(sb, &book, &[]).assert_success();
    assert_ne!(sb.current_system("h1"), before);
}
