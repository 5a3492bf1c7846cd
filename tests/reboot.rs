//! `reboot` and `activate(..., #{ mode: "boot", reboot: true })` on real sandbox hosts: each
//! host really restarts (sshd restarted, `/run` emptied, a new boot id) and comes back running
//! its profile's system.

mod common;

use common::{runbook, skip_unless_root, Sandbox};

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];

#[test]
fn activate_boot_with_reboot_brings_every_host_back_on_its_new_system() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    sb.fresh_revs();
    let before: Vec<String> = HOSTS.iter().map(|h| sb.boot_id(h)).collect();
    let book = runbook(
        &sb,
        "boot-reboot.rhai",
        r#"
        let a = activate(copy(build(hosts())), #{ mode: "boot", reboot: true });
        if !a.ok { throw a.errors; }
        for h in names(a.succeeded) { print(`${h}: ${a[h].rebooted.boot_id}`); }
        "#,
    );
    let out = common::run(&sb, &book, &[]);
    out.assert_success();
    assert!(
        !format!("{out}").contains("lost the deploy lock"),
        "the reboot let go of the lock on purpose: {out}"
    );
    for (h, old) in HOSTS.iter().zip(before) {
        let new = sb.boot_id(h);
        assert_ne!(new, old, "{h} has a new boot id");
        assert!(
            format!("{out}").contains(&format!("{h}: {new}")),
            "the report carries {h}'s new boot id: {out}"
        );
        sb.assert_runs_its_toplevel(h, "it came back running its new system");
    }
}

#[test]
fn reboot_alone_waits_for_each_host_and_a_second_step_reuses_new_connections() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    sb.fresh_revs();
    let book = runbook(
        &sb,
        "reboot.rhai",
        r#"
        let a = activate(copy(build(hosts())));
        if !a.ok { throw a.errors; }
        let r = reboot(a, #{ timeout: 60 });
        if !r.ok { throw r.errors; }
        let e = exec(r, "cat /proc/sys/kernel/random/boot_id");
        if !e.ok { throw e.errors; }
        "#,
    );
    let before: Vec<String> = HOSTS.iter().map(|h| sb.boot_id(h)).collect();
    let out = common::run(&sb, &book, &[]);
    out.assert_success();
    assert!(!format!("{out}").contains("lost the deploy lock"), "{out}");
    for (h, old) in HOSTS.iter().zip(before) {
        assert_ne!(sb.boot_id(h), old, "{h} rebooted");
        sb.assert_runs_its_toplevel(h, "after the reboot");
    }
}
