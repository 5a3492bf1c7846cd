//! Simulated reboots of sandbox hosts: from the machine (`sandbox reboot`) and from the host's own
//! `reboot` command, each ending every process, emptying `/run`, changing the boot id and
//! booting the boot default.

mod common;

use std::time::Duration;

use common::{eventually, Sandbox};

#[test]
fn a_reboot_empties_run_changes_the_boot_id_and_boots_the_boot_default() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    let system = sb.build_toplevel("h1");
    assert!(sb.nix_copy("h1", &system).status.success());
    let boot = sb.ssh("h1", &format!("{system}/bin/switch-to-configuration boot"));
    assert!(boot.status.success(), "{boot:?}");
    assert_eq!(sb.boot_default("h1").as_deref(), Some(system.as_str()));
    assert_eq!(sb.current_system("h1"), None, "boot must not activate");
    let id = sb.boot_id("h1");
    let other = sb.boot_id("h2");
    assert_ne!(id, other, "hosts share a boot id");
    std::fs::write(sb.host_root("h1").join("run/marker"), "x").unwrap();
    let sleeper = sb.ssh(
        "h1",
        "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!",
    );
    let sleeper: u32 = String::from_utf8_lossy(&sleeper.stdout)
        .trim()
        .parse()
        .unwrap();

    sb.reboot("h1");

    assert_ne!(sb.boot_id("h1"), id);
    assert_eq!(sb.boot_id("h2"), other, "h2 was rebooted too");
    assert!(
        !sb.host_root("h1").join("run/marker").exists(),
        "/run survived"
    );
    assert!(
        !common::process_alive(sleeper),
        "a process survived the reboot"
    );
    assert_eq!(sb.current_system("h1").as_deref(), Some(system.as_str()));
    assert_eq!(sb.boot_default("h1").as_deref(), Some(system.as_str()));
    assert!(sb.store_has("h1", &system), "the store did not survive");
}

#[test]
fn reboot_run_on_the_host_reboots_it() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let id = sb.boot_id("h1");
    let out = sb.ssh("h1", "command -v reboot && reboot");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/nix/var/nixdeploy-sandbox/bin/reboot"),
        "the host's reboot is not the sandbox's: {out:?}"
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            let o = sb.ssh("h1", "cat /proc/sys/kernel/random/boot_id");
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() != id
        }),
        "h1 never came back with a new boot id"
    );
}
