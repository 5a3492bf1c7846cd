//! `nixdeploy sandbox`: disposable SSH targets with their own stores, as the other tests use them.

mod common;

use std::collections::BTreeSet;

use common::{link_exists, mounts_under, netns_list, process_alive, Sandbox};

#[test]
fn every_host_accepts_the_sandbox_key_over_ssh() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    for host in ["h1", "h2", "h3"] {
        let out = sb.ssh(host, "hostname");
        assert!(out.status.success(), "ssh {host}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), host);
    }
}

#[test]
fn a_copied_closure_lands_in_that_hosts_store_only() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    let toplevel = sb.build_toplevel("h1");
    let out = sb.nix_copy("h1", &toplevel);
    assert!(out.status.success(), "nix copy: {out:?}");
    assert!(sb.store_has("h1", &toplevel));
    assert!(!sb.store_has("h2", &toplevel));
    assert!(!sb.store_has("h3", &toplevel));
}

#[test]
fn switching_over_ssh_changes_only_that_hosts_current_system() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    let toplevel = sb.build_toplevel("h1");
    assert!(sb.nix_copy("h1", &toplevel).status.success());
    let cmd = format!(
        "nix-env -p /nix/var/nix/profiles/system --set {toplevel} && \
         /nix/var/nix/profiles/system/bin/switch-to-configuration switch"
    );
    let out = sb.ssh("h1", &cmd);
    assert!(out.status.success(), "switch: {out:?}");
    assert_eq!(sb.current_system("h1").as_deref(), Some(toplevel.as_str()));
    assert_eq!(sb.current_system("h2"), None);
    assert_eq!(sb.profile_generations("h1"), [1]);
    assert_eq!(sb.activations("h1"), [format!("switch {toplevel}")]);
    assert_eq!(sb.health("h1").as_deref(), Some("healthy"));
    let health = sb.ssh("h1", "busybox wget -qO- http://127.0.0.1:8080/health");
    assert_eq!(String::from_utf8_lossy(&health.stdout).trim(), "ok");
}

#[test]
fn a_rev_bump_changes_only_the_unique_path_and_the_toplevel() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let first = sb.build_toplevel("h1");
    assert!(sb.nix_copy("h1", &first).status.success());
    let before = sb.store_paths("h1");
    sb.set_behavior("h1", "ok");
    let second = sb.build_toplevel("h1");
    assert_ne!(first, second);
    assert!(sb.nix_copy("h1", &second).status.success());
    let new: BTreeSet<_> = sb.store_paths("h1").difference(&before).cloned().collect();
    assert_eq!(new.len(), 2, "new paths: {new:?}");
    assert!(new.iter().any(|p| p.ends_with("-host-data-h1-2")));
    assert!(new.contains(&second));
}

#[test]
fn failing_activation_is_recorded_and_exits_2() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    sb.set_behavior("h1", "fail-activation");
    let toplevel = sb.build_toplevel("h1");
    assert!(sb.nix_copy("h1", &toplevel).status.success());
    let out = sb.ssh(
        "h1",
        &format!("{toplevel}/bin/switch-to-configuration switch"),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(sb.activations("h1"), [format!("switch {toplevel}")]);
    assert_eq!(sb.current_system("h1"), None);
    let usage = sb.ssh(
        "h1",
        &format!("{toplevel}/bin/switch-to-configuration nope"),
    );
    assert_eq!(usage.status.code(), Some(1));
}

#[test]
fn status_json_has_the_documented_shape() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(2).builders(1).up();
    let status = sb.status();
    let keys: BTreeSet<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, BTreeSet::from(["flake", "ssh_config", "hosts"]));
    assert_eq!(status["flake"], sb.flake());
    assert_eq!(status["ssh_config"], sb.ssh_config().display().to_string());
    let hosts = status["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["h1", "h2", "b1"]);
    for h in hosts {
        assert_eq!(h.as_object().unwrap().len(), 3);
        assert!(h["address"].as_str().unwrap().starts_with("10.77."));
        assert_eq!(h["up"], true);
    }
}

#[test]
fn the_flake_exposes_the_inventory() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(2).builders(1).up();
    let out = std::process::Command::new("nix")
        .args(common::NIX_FLAGS)
        .args(["eval", "--json", &format!("{}#nixdeploy", sb.flake())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let inv: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inv["sshConfig"], sb.ssh_config().display().to_string());
    assert_eq!(inv["defaults"]["targetUser"], "root");
    assert_eq!(
        inv["hosts"]["h1"]["tags"],
        serde_json::json!(["sandbox", "canary", "web"])
    );
    assert_eq!(
        inv["hosts"]["h2"]["tags"],
        serde_json::json!(["sandbox", "db"])
    );
    assert_eq!(inv["builders"]["b1"]["host"], "b1");
    assert_eq!(
        inv["builders"]["b1"]["systems"],
        serde_json::json!(["aarch64-linux"])
    );
}

#[test]
fn up_twice_keeps_hosts_and_keys() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    let pids = sb.sshd_pids();
    let key = std::fs::read(sb.dir().join("id_ed25519")).unwrap();
    let known = std::fs::read(sb.dir().join("known_hosts")).unwrap();
    sb.up_again(2, 0).assert_success();
    assert_eq!(sb.sshd_pids(), pids);
    assert_eq!(std::fs::read(sb.dir().join("id_ed25519")).unwrap(), key);
    assert_eq!(std::fs::read(sb.dir().join("known_hosts")).unwrap(), known);
    assert!(sb.ssh("h2", "true").status.success());
}

#[test]
fn up_again_with_more_hosts_adds_only_the_new_ones() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let pids = sb.sshd_pids();
    sb.up_again(2, 0).assert_success();
    assert_eq!(sb.sshd_pids()[0], pids[0]);
    assert!(sb.ssh("h2", "true").status.success());
    assert!(sb.fleet_json()["hosts"].get("h2").is_some());
}

#[test]
fn two_sandboxes_coexist() {
    if !common::skip_unless_root() {
        return;
    }
    let a = Sandbox::up(2);
    let b = Sandbox::up(2);
    let addr = |s: &Sandbox| {
        s.status()["hosts"][0]["address"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_ne!(addr(&a), addr(&b));
    assert!(a.ssh("h1", "true").status.success());
    assert!(b.ssh("h1", "true").status.success());
    drop(a);
    assert!(b.ssh("h2", "true").status.success());
}

#[test]
fn down_leaves_nothing_behind() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    let pids = sb.sshd_pids();
    let namespaces = sb.netns_names();
    assert_eq!(pids.len(), 2);
    // Something besides sshd running in a host: down must find it through the namespace.
    let toplevel = sb.build_toplevel("h1");
    assert!(sb.nix_copy("h1", &toplevel).status.success());
    assert!(sb
        .ssh(
            "h1",
            &format!("{toplevel}/bin/switch-to-configuration test")
        )
        .status
        .success());
    let httpd: u32 =
        std::fs::read_to_string(sb.host_root("h1").join("run/nixdeploy-sandbox/httpd.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    sb.down();
    let left = netns_list();
    for ns in &namespaces {
        assert!(!left.contains(ns), "namespace {ns} left");
        assert!(!link_exists(ns), "veth {ns} left");
    }
    for pid in pids.iter().chain([&httpd]) {
        assert!(!process_alive(*pid), "process {pid} left");
    }
    assert!(mounts_under(sb.dir()).is_empty());
    assert!(!sb.dir().exists(), "{} left", sb.dir().display());
}

#[test]
fn down_without_a_sandbox_is_fine() {
    if !common::skip_unless_root() {
        return;
    }
    let tmp = tempfile::TempDir::new().unwrap();
    let dir = tmp.path().join("nothing");
    common::nixdeploy(&["sandbox", "down", "--dir"])
        .args(&[&dir])
        .success();
}

#[test]
fn status_without_a_sandbox_is_an_input_error() {
    if !common::skip_unless_root() {
        return;
    }
    let tmp = tempfile::TempDir::new().unwrap();
    common::nixdeploy(&["sandbox", "status", "--dir"])
        .args(&[tmp.path()])
        .failure()
        .assert_code(4)
        .assert_stderr_contains("no sandbox");
}

#[test]
fn host_counts_outside_1_to_256_are_refused() {
    for bad in ["0", "257"] {
        let tmp = tempfile::TempDir::new().unwrap();
        common::nixdeploy(&["sandbox", "up", "--hosts", bad, "--dir"])
            .args(&[tmp.path()])
            .failure()
            .assert_stderr_contains("--hosts");
        assert!(!tmp.path().join("state.json").exists());
    }
}

#[test]
fn a_host_that_cuts_its_network_stops_answering_and_a_good_generation_restores_it() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    let good = sb.build_toplevel("h1");
    sb.set_behavior("h1", "cut-network");
    let cut = sb.build_toplevel("h1");
    assert!(sb.nix_copy("h1", &good).status.success());
    assert!(sb.nix_copy("h1", &cut).status.success());
    // A detached process started before the cut survives it and can switch back later.
    let restore = format!(
        "setsid sh -c 'sleep 6; {good}/bin/switch-to-configuration switch' </dev/null >/dev/null 2>&1 &"
    );
    assert!(sb.ssh("h1", &restore).status.success());
    let out = sb.ssh("h1", &format!("{cut}/bin/switch-to-configuration switch"));
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert_eq!(sb.current_system("h1").as_deref(), Some(cut.as_str()));
    let status = sb.status();
    assert_eq!(status["hosts"][0]["up"], false);
    assert_eq!(status["hosts"][1]["up"], true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sb.current_system("h1").as_deref() != Some(good.as_str()) {
        assert!(
            std::time::Instant::now() < deadline,
            "h1 never switched back"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(sb.ssh("h1", "true").status.success());
}

#[test]
fn an_unhealthy_generation_activates_but_reports_unhealthy() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    sb.set_behavior("h1", "unhealthy");
    let toplevel = sb.build_toplevel("h1");
    assert!(sb.nix_copy("h1", &toplevel).status.success());
    let out = sb.ssh(
        "h1",
        &format!("{toplevel}/bin/switch-to-configuration switch"),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sb.current_system("h1").as_deref(), Some(toplevel.as_str()));
    assert_eq!(sb.health("h1").as_deref(), Some("unhealthy"));
    assert!(!std::path::Path::new(&toplevel).join("www/health").exists());
}

#[test]
fn a_builder_builds_aarch64_for_the_deployer() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(1).builders(1).up();
    sb.edit_fleet(|f| {
        f["hosts"]["h1"]["system"] = "aarch64-linux".into();
        // The machine's store is shared: a rev nobody built before forces a real build.
        f["hosts"]["h1"]["rev"] = common::unique_rev().into();
    });
    let attr = format!(
        "{}#nixosConfigurations.h1.config.system.build.toplevel",
        sb.flake()
    );
    let out = std::process::Command::new("nix")
        .args(common::NIX_FLAGS)
        .args(["build", "--no-link", "--json", "--max-jobs", "0"])
        .args(["--builders", "ssh-ng://b1 aarch64-linux - 1 1", &attr])
        .env("NIX_SSHOPTS", format!("-F {}", sb.ssh_config().display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let built: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = built[0]["outputs"]["out"].as_str().unwrap();
    assert!(sb.store_has("b1", path), "b1 did not build {path}");
}
