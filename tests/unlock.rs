//! Deploy locks left behind by another run: refused while held (naming the holder), broken by
//! `--force-unlock` with a loud warning, and freed on their own once the holder is gone.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, run, runbook, Sandbox};

/// Takes h1's deploy lock (through `upload_key`) and then sits on it.
const HOLD: &str = r#"
upload_key(host("h1"), #{ name: "hold.key", text: "held" });
sleep(60);
"#;

const APPLY: &str = r#"
let r = activate(copy(build(hosts())), #{ confirm_timeout: 5 });
if !r.ok { throw `activate failed on ${r.failed}`; }
"#;

/// Starts the holding run in the background and waits until h1 names it as the lock's owner.
fn start_holder(sb: &Sandbox) -> Child {
    let book = runbook(sb, "hold.rhai", HOLD);
    let child = Command::new(common::BIN)
        .args(["run".as_ref(), book.as_os_str()])
        .args(["--flake", &sb.flake()])
        .env("NIXDEPLOY_STATE_DIR", sb.state_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the holding run");
    let owner = sb.host_root("h1").join("run/nixdeploy/deploy.owner");
    let held = eventually(Duration::from_secs(60), || {
        fs::read_to_string(&owner).is_ok_and(|o| o.contains("hold.rhai"))
            && sb.host_root("h1").join("run/keys/hold.key").exists()
    });
    assert!(held, "the holding run never took h1's lock");
    child
}

/// Whether h1's deploy lock is free right now.
fn lock_free(sb: &Sandbox) -> bool {
    sb.ssh("h1", "flock -n /run/nixdeploy/deploy.lock true")
        .status
        .success()
}

fn kill9(mut child: Child) {
    child.kill().expect("kill -9 the holder");
    let _ = child.wait();
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
    let holder = start_holder(&sb);
    new_generation(&sb);
    let book = runbook(&sb, "apply.rhai", APPLY);
    assert_refused_naming_the_holder(&sb, &book);
    assert_force_unlock_deploys(&sb, &book);
    kill9(holder);
}

#[test]
fn a_lock_left_by_a_frozen_run_is_refused_and_broken_only_with_force_unlock() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let holder = start_holder(&sb);
    // SIGSTOP: the run's connection stays open but sends no heartbeat — a lock left behind.
    signal(&holder, libc::SIGSTOP);
    new_generation(&sb);
    let book = runbook(&sb, "apply.rhai", APPLY);
    assert_refused_naming_the_holder(&sb, &book);
    assert_force_unlock_deploys(&sb, &book);
    kill9(holder);
}

#[test]
fn a_lock_left_by_a_frozen_run_expires_after_its_last_heartbeat() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let holder = start_holder(&sb);
    signal(&holder, libc::SIGSTOP);
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
    kill9(holder);
    deploys_now(&sb);
}

#[test]
fn a_lock_ends_as_soon_as_a_killed_holder_s_connection_closes() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    kill9(start_holder(&sb));
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

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
    assert_eq!(
        unsafe { libc::kill(child.id() as i32, sig) },
        0,
        "kill {sig}"
    );
}
