//! Safe activation under real failures, on sandbox hosts: a network that goes away a moment after
//! activation, ssh blocked for a while, a reboot before confirmation, a wall-clock step, a lost
//! deploy lock, a refused live switch, and SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::background::BackgroundRun;
use common::rollback::{
    assert_back_on, assert_rolled_back_and_answering, deployed_then_set_behavior,
};
use common::{eventually, run, runbook, Sandbox};

/// Asserts that `host` runs `system`, and that its profile and boot default name it too.
fn assert_fully_on(sb: &Sandbox, host: &str, system: &str, out: &dyn std::fmt::Display) {
    assert_eq!(
        sb.current_system(host).as_deref(),
        Some(system),
        "{host} runs: {out}"
    );
    assert_eq!(
        sb.profile_target(host).as_deref(),
        Some(system),
        "{host}'s profile: {out}"
    );
    assert_eq!(
        sb.boot_default(host).as_deref(),
        Some(system),
        "{host}'s boot default: {out}"
    );
}

/// Waits up to `limit` until every one of `hosts` runs its new system under an armed watchdog
/// (activated, not yet confirmed).
fn assert_armed_within(sb: &Sandbox, hosts: &[&str], limit: Duration) {
    let armed = |h: &&str| sb.activation_states(h).iter().any(|s| s == "armed");
    assert!(
        eventually(limit, || hosts.iter().all(armed)),
        "not every one of {hosts:?} was armed within {limit:?}"
    );
}

#[test]
fn a_network_lost_half_a_second_after_activation_is_rolled_back_on_every_host() {
    if !common::skip_unless_root() {
        return;
    }
    let hosts = ["h1", "h2", "h3"];
    let (sb, before) = deployed_then_set_behavior(3, "cut-network-late");
    // Default settings but a shorter confirm timeout, to keep the test quick.
    let book = runbook(
        &sb,
        "late.rhai",
        "activate(copy(build(hosts())), #{ confirm_timeout: 8 });",
    );
    let out = run(&sb, &book, &[]);

    assert_eq!(out.code(), Some(1), "{out}");
    for (h, old) in hosts.iter().zip(&before) {
        assert_rolled_back_and_answering(&sb, h, old, Duration::from_secs(10), &out);
        assert_fully_on(&sb, h, old, &out);
        assert!(
            out.stderr.contains(&format!("{h} rolled back")),
            "no rollback reported for {h}: {out}"
        );
    }
}

#[test]
fn a_host_whose_ssh_is_blocked_for_ten_seconds_is_confirmed_once_it_answers_again() {
    if !common::skip_unless_root() {
        return;
    }
    let (sb, _) = deployed_then_set_behavior(1, "block-ssh");
    let new = sb.build_toplevel("h1");
    let book = runbook(
        &sb,
        "blocked.rhai",
        "let r = activate(copy(build(hosts())), #{ confirm_timeout: 30 });\nif !r.ok { throw `failed: ${r.failed}`; }",
    );
    let out = run(&sb, &book, &["--json"]);

    out.assert_success();
    assert_fully_on(&sb, "h1", &new, &out);
    let deployed = out
        .json_lines()
        .iter()
        .any(|e| e["event"] == "host" && e["host"] == "h1" && e["state"] == "deployed")
        || out.stdout.contains("\"deployed\"");
    assert!(deployed, "h1 not reported deployed: {out}");
}

#[test]
fn a_connection_dropped_during_activation_is_followed_by_a_confirmation_over_a_new_one() {
    if !common::skip_unless_root() {
        return;
    }
    let (sb, _) = deployed_then_set_behavior(1, "block-ssh");
    // Longer than the multiplexed connection's keepalives (3 × 5 s): it surely dies.
    sb.edit_fleet(|f| f["hosts"]["h1"]["blockSshSecs"] = 20.into());
    let new = sb.build_toplevel("h1");
    let book = runbook(
        &sb,
        "dropped.rhai",
        "let r = activate(copy(build(hosts())), #{ confirm_timeout: 45 });\nif !r.ok { throw `failed: ${r.failed}`; }",
    );
    let out = run(&sb, &book, &[]);

    out.assert_success();
    assert!(
        out.stderr.contains("asking it over new connections"),
        "{out}"
    );
    assert_fully_on(&sb, "h1", &new, &out);
}

#[test]
fn without_magic_rollback_a_host_blocked_during_activation_is_still_reported_deployed() {
    if !common::skip_unless_root() {
        return;
    }
    let (sb, _) = deployed_then_set_behavior(1, "block-ssh");
    sb.edit_fleet(|f| f["hosts"]["h1"]["blockSshSecs"] = 20.into());
    let new = sb.build_toplevel("h1");
    let book = runbook(
        &sb,
        "blocked.rhai",
        "let r = activate(copy(build(hosts())), #{ magic_rollback: false });\nif !r.ok { throw `failed: ${r.failed}`; }",
    );
    let out = run(&sb, &book, &[]);

    out.assert_success();
    assert_fully_on(&sb, "h1", &new, &out);
}

#[test]
fn a_host_rebooted_while_armed_comes_back_on_its_previous_generation() {
    if !common::skip_unless_root() {
        return;
    }
    let (sb, before) = deployed_then_set_behavior(1, "ok");
    let gens = sb.profile_generations("h1");
    let new = sb.build_toplevel("h1");
    let book = runbook(
        &sb,
        "armed.rhai",
        "let r = activate(copy(build(hosts())), #{ confirm: \"manual\", confirm_timeout: 60 });\nsleep(10);\nconfirm(r);",
    );
    let deployer = BackgroundRun::start(&sb, &book, &[]);
    assert_armed_within(&sb, &["h1"], Duration::from_secs(60));
    // Test first: the new system runs, but nothing that survives a reboot names it.
    assert_eq!(sb.current_system("h1").as_deref(), Some(new.as_str()));
    assert_eq!(sb.profile_target("h1").as_ref(), Some(&before[0]));
    assert_eq!(sb.boot_default("h1").as_ref(), Some(&before[0]));
    let boot_id = sb.boot_id("h1");

    sb.reboot("h1");

    assert_ne!(sb.boot_id("h1"), boot_id, "the reboot kept the boot id");
    let out = deployer.finish(Duration::from_secs(120));
    assert_fully_on(&sb, "h1", &before[0], &out);
    assert_eq!(sb.profile_generations("h1"), gens, "{out}");
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("rebooted"), "{out}");

    // Once confirmed, the profile and the boot default name the new system, and a reboot keeps it.
    let apply = runbook(&sb, "apply.rhai", "activate(copy(build(hosts())));");
    let out = run(&sb, &apply, &[]);
    out.assert_success();
    assert_fully_on(&sb, "h1", &new, &out);
    sb.reboot("h1");
    assert_fully_on(&sb, "h1", &new, &out);
}

/// Puts a `date` first on `host`'s PATH that adds the seconds in the host's `/run/clock-offset`
/// (once the test writes it) to the real time.
///
/// The sandbox cannot step one host's wall clock without stepping the machine's (time namespaces
/// offset only the monotonic clocks), so the step is staged where a shell script meets the wall
/// clock: `date`, first on the PATH every ssh session on the host (and so the watchdog) gets. The
/// watchdog used to read its deadline exactly there (`date +%s`); a unit test checks the script
/// reads no other wall clock (no `date`, `EPOCHSECONDS`, `printf %(%s)T`).
fn stage_clock_step(sb: &Sandbox, host: &str) {
    let fake = sb.host_bin(host).join("date");
    std::fs::write(
        &fake,
        "#!/bin/sh\noff=0; [ -r /run/clock-offset ] && read -r off < /run/clock-offset\n\
         exec /bin/date -d \"@$(( $(/bin/date +%s) + off ))\" \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// Steps `host`'s (staged) wall clock by `secs` and checks that its `date` shows it.
fn step_clock(sb: &Sandbox, host: &str, secs: i64) {
    let before = date_on(sb, host);
    std::fs::write(
        sb.host_root(host).join("run/clock-offset"),
        secs.to_string(),
    )
    .unwrap();
    let after = date_on(sb, host);
    assert!(
        (after - before - secs).abs() < 60,
        "{host}'s clock did not step by {secs} s ({before} -> {after})"
    );
}

#[test]
fn a_wall_clock_step_during_the_confirm_window_does_not_roll_back_a_confirmed_host() {
    if !common::skip_unless_root() {
        return;
    }
    let (sb, _) = deployed_then_set_behavior(1, "ok");
    stage_clock_step(&sb, "h1");
    let new = sb.build_toplevel("h1");
    let book = runbook(
        &sb,
        "clock.rhai",
        "let r = activate(copy(build(hosts())), #{ confirm_timeout: 15, settle: 5 });\nif !r.ok { throw `failed: ${r.failed}`; }",
    );
    let deployer = BackgroundRun::start(&sb, &book, &[]);
    assert_armed_within(&sb, &["h1"], Duration::from_secs(60));
    step_clock(&sb, "h1", 3600);

    let out = deployer.finish(Duration::from_secs(120));
    out.assert_success();
    assert_fully_on(&sb, "h1", &new, &out);
    assert!(
        sb.activation_states("h1").iter().any(|s| s == "confirmed"),
        "{out}"
    );
}

#[test]
fn a_wall_clock_stepped_back_does_not_keep_an_unconfirmed_host_for_an_hour() {
    if !common::skip_unless_root() {
        return;
    }
    let (sb, before) = deployed_then_set_behavior(1, "cut-network");
    stage_clock_step(&sb, "h1");
    let book = runbook(
        &sb,
        "clock.rhai",
        "activate(copy(build(hosts())), #{ confirm_timeout: 8 });",
    );
    let deployer = BackgroundRun::start(&sb, &book, &[]);
    assert_armed_within(&sb, &["h1"], Duration::from_secs(60));
    std::fs::write(sb.host_root("h1").join("run/clock-offset"), "-3600").unwrap();
    let stepped = Instant::now();

    assert_back_on(
        &sb,
        "h1",
        &before[0],
        Duration::from_secs(20),
        "not rolled back within its confirm timeout after the clock stepped back",
    );
    assert!(stepped.elapsed() < Duration::from_secs(20));
    let out = deployer.finish(Duration::from_secs(120));
    assert_eq!(out.code(), Some(1), "{out}");
    assert_fully_on(&sb, "h1", &before[0], &out);
}

fn date_on(sb: &Sandbox, host: &str) -> i64 {
    let out = sb.ssh(host, "date +%s");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("date +%s on {host}: {out:?}"))
}

#[test]
fn killing_the_lock_holders_connection_fails_the_host_and_frees_the_lock() {
    if !common::skip_unless_root() {
        return;
    }
    let (sb, _) = deployed_then_set_behavior(1, "ok");
    let first = runbook(
        &sb,
        "holder.rhai",
        "let c = copy(build(hosts()));\nsleep(30);\nactivate(c);",
    );
    let deployer = BackgroundRun::start(&sb, &first, &[]);
    let owner = sb.host_root("h1").join("run/nixdeploy/deploy.owner");
    assert!(
        eventually(Duration::from_secs(60), || std::fs::read_to_string(&owner)
            .is_ok_and(|o| o.contains("holder.rhai"))),
        "the first run never took the lock"
    );
    let masters = ssh_masters(&sb);
    assert!(!masters.is_empty(), "no master connection found");
    for pid in masters {
        // SAFETY: kill(2) on an ssh master of this test's sandbox, found by its argv.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }

    // Another deployer can take the lock now.
    sb.set_behavior("h1", "ok");
    let second = runbook(&sb, "second.rhai", "activate(copy(build(hosts())));");
    let took = eventually(Duration::from_secs(40), || {
        run(&sb, &second, &[]).status.success()
    });
    let out = deployer.finish(Duration::from_secs(120));
    assert!(took, "a second run could not take the lock: {out}");
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("lost the deploy lock on h1"), "{out}");
}

/// The pids of ssh master connections (`ssh -M`) to this sandbox's hosts.
fn ssh_masters(sb: &Sandbox) -> Vec<u32> {
    let config = sb.ssh_config().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv: Vec<&[u8]> = argv.split(|b| *b == 0).collect();
            argv.first() == Some(&b"ssh".as_slice())
                && argv.contains(&b"-M".as_slice())
                && argv.contains(&config.as_bytes())
        })
        .collect()
}

#[test]
fn a_refused_live_switch_fails_the_host_or_makes_the_new_system_the_boot_default() {
    if !common::skip_unless_root() {
        return;
    }
    let (sb, before) = deployed_then_set_behavior(1, "inhibited");
    let new = sb.build_toplevel("h1");

    let refuse = runbook(&sb, "refuse.rhai", "activate(copy(build(hosts())));");
    let out = run(&sb, &refuse, &[]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("refused a live switch"), "{out}");
    assert_fully_on(&sb, "h1", &before[0], &out);

    let stage = runbook(
        &sb,
        "stage.rhai",
        "let r = activate(copy(build(hosts())), #{ on_refusal: \"boot\" });\nif !r.ok { throw `failed: ${r.failed}`; }",
    );
    let out = run(&sb, &stage, &[]);
    out.assert_success();
    assert_eq!(sb.current_system("h1").as_ref(), Some(&before[0]), "{out}");
    assert_eq!(sb.profile_target("h1").as_deref(), Some(new.as_str()));
    assert_eq!(sb.boot_default("h1").as_deref(), Some(new.as_str()));
    sb.reboot("h1");
    assert_eq!(sb.current_system("h1").as_deref(), Some(new.as_str()));
}

#[test]
fn sigterm_during_a_deploy_prints_the_summary_and_settles_every_armed_host() {
    if !common::skip_unless_root() {
        return;
    }
    let hosts = ["h1", "h2", "h3"];
    let (sb, before) = deployed_then_set_behavior(3, "ok");
    let book = runbook(
        &sb,
        "term.rhai",
        "let r = activate(copy(build(hosts())), #{ confirm: \"manual\", confirm_timeout: 90 });\nsleep(90);\nconfirm(r);",
    );
    let deployer = BackgroundRun::start(&sb, &book, &[]);
    assert_armed_within(&sb, &hosts, Duration::from_secs(90));
    deployer.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let out = deployer.finish(Duration::from_secs(60));

    assert_eq!(out.code(), Some(130), "{out}");
    // Settled by the deployer, not by the watchdogs' 90 s timeout.
    assert!(signalled.elapsed() < Duration::from_secs(45), "{out}");
    assert!(out.stderr.contains("SIGTERM"), "{out}");
    assert!(
        out.stderr.contains("host") && out.stderr.contains("state"),
        "no summary: {out}"
    );
    for (h, old) in hosts.iter().zip(&before) {
        assert_fully_on(&sb, h, old, &out);
        assert!(
            sb.activation_states(h)
                .iter()
                .all(|s| s.starts_with("rolled-back") || s == "confirmed" || s == "done"),
            "{h} left an activation unsettled: {:?}",
            sb.activation_states(h)
        );
    }
}
