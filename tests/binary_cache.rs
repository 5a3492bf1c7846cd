//! `copy(.., #{ via: "cache" })` on a real sandbox fleet with its binary cache host: the
//! closures are pushed once (never what the cache holds), every host substitutes its system
//! from the cache over HTTP with the signature check enforced, and a host cut off from the
//! cache is copied to directly and reported.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::time::SystemTime;

use common::{skip_unless_root, unique_rev, Sandbox};
use serde_json::Value;

const APPLY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks/apply.rhai");

/// Every narinfo in the cache with its modification time.
fn cache_contents(sb: &Sandbox) -> BTreeMap<String, SystemTime> {
    fs::read_dir(sb.dir().join("cache"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".narinfo"))
        .map(|e| {
            let mtime = e.metadata().unwrap().modified().unwrap();
            (e.file_name().to_string_lossy().into_owned(), mtime)
        })
        .collect()
}

fn deploy_via_cache(sb: &Sandbox, extra: &[&str]) -> Vec<Value> {
    let flake = sb.flake();
    let mut args = vec![
        "run",
        APPLY,
        "--flake",
        &flake,
        "--set",
        "via=cache",
        "--json",
    ];
    args.extend(extra);
    sb.nixdeploy(&args).success().json_lines()
}

fn messages(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "message")
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The message of `host`'s finished copy step.
fn copy_message(events: &[Value], host: &str) -> String {
    events
        .iter()
        .rev()
        .find(|e| {
            e["event"] == "step"
                && e["step"] == "copy"
                && e["host"] == host
                && e["state"] != "started"
        })
        .and_then(|e| e["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_deploy_through_the_cache_puts_every_host_on_its_system_and_pushes_nothing_twice() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(3).cache().up();
    sb.fresh_revs();
    let hosts = ["h1", "h2", "h3"];

    let dry = deploy_via_cache(&sb, &["--dry-run"]);
    assert!(
        messages(&dry)
            .iter()
            .any(|m| m.starts_with("cache: would push ") && !m.starts_with("cache: would push 0 ")),
        "{:?}",
        messages(&dry)
    );
    for h in hosts {
        let m = copy_message(&dry, h);
        assert!(
            m.contains("would fetch") && m.contains("http://"),
            "{h}: {m}"
        );
    }
    assert!(cache_contents(&sb).is_empty(), "a dry run pushes nothing");

    let first = deploy_via_cache(&sb, &[]);
    assert!(
        messages(&first)
            .iter()
            .any(|m| m.starts_with("cache: pushed ") && !m.starts_with("cache: pushed 0 ")),
        "{:?}",
        messages(&first)
    );
    for h in hosts {
        let expected = sb.build_toplevel(h);
        assert_eq!(
            sb.current_system(h).as_deref(),
            Some(expected.as_str()),
            "{h}"
        );
        let m = copy_message(&first, h);
        assert!(
            m.starts_with("fetched ") && m.contains("http://10.77."),
            "{h}: {m}"
        );
    }

    // Nothing changed: nothing is pushed, and no narinfo is rewritten.
    let before = cache_contents(&sb);
    let again = deploy_via_cache(&sb, &[]);
    assert!(
        messages(&again)
            .iter()
            .any(|m| m.starts_with("cache: pushed 0 path(s), 0.0 MiB")),
        "{:?}",
        messages(&again)
    );
    assert_eq!(cache_contents(&sb), before, "the cache is untouched");

    // One host changes: only its new paths (its data and its toplevel) go to the cache.
    sb.edit_fleet(|v| v["hosts"]["h1"]["rev"] = serde_json::json!(unique_rev()));
    let third = deploy_via_cache(&sb, &[]);
    assert!(
        messages(&third)
            .iter()
            .any(|m| m.starts_with("cache: pushed 2 path(s), ")),
        "{:?}",
        messages(&third)
    );
    let after = cache_contents(&sb);
    assert_eq!(after.len(), before.len() + 2);
    for (name, mtime) in &before {
        assert_eq!(after.get(name), Some(mtime), "{name} was not pushed again");
    }
    assert_eq!(sb.current_system("h1"), Some(sb.build_toplevel("h1")));
}

#[test]
fn hosts_refuse_paths_that_are_unsigned_or_signed_by_another_key() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(1).cache().up();
    let flake = sb.flake();

    // Signed, but with a key the host is not told to trust.
    sb.fresh_revs();
    let other = tempfile::TempDir::new().unwrap();
    let (secret, public) = (other.path().join("sk"), other.path().join("pk"));
    let ok = std::process::Command::new("nix-store")
        .arg("--generate-binary-cache-key")
        .arg("impostor-1")
        .arg(&secret)
        .arg(&public)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let impostor = fs::read_to_string(&public).unwrap();
    sb.edit_fleet(|v| v["cache"]["publicKey"] = serde_json::json!(impostor.trim()));
    let out = sb
        .nixdeploy(&["run", APPLY, "--flake", &flake, "--set", "via=cache"])
        .failure();
    out.assert_stderr_contains("refused the paths from the binary cache");
    out.assert_stderr_contains("not signed by any of the keys");
    let system = sb.build_toplevel("h1");
    assert!(!sb.store_has("h1", &system), "the system never reached h1");
    assert_ne!(sb.current_system("h1"), Some(system));

    // Unsigned: the key is right but nixdeploy is given no signing key.
    let sandbox_key = fs::read_to_string(sb.dir().join("cache-key/public")).unwrap();
    sb.fresh_revs();
    sb.edit_fleet(|v| {
        v["cache"]["publicKey"] = serde_json::json!(sandbox_key.trim());
        v["cache"].as_object_mut().unwrap().remove("signingKeyFile");
    });
    let out = sb
        .nixdeploy(&["run", APPLY, "--flake", &flake, "--set", "via=cache"])
        .failure();
    out.assert_stderr_contains("refused the paths from the binary cache");
    let system = sb.build_toplevel("h1");
    assert!(
        !sb.store_has("h1", &system),
        "the unsigned system never reached h1"
    );
}

#[test]
fn a_host_that_cannot_reach_the_cache_is_copied_to_directly_and_reported() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(2).cache().up();
    sb.fresh_revs();
    sb.fault("h2", "no-cache");
    let events = deploy_via_cache(&sb, &[]);
    for h in ["h1", "h2"] {
        assert_eq!(sb.current_system(h), Some(sb.build_toplevel(h)), "{h}");
    }
    assert!(copy_message(&events, "h1").starts_with("fetched "));
    let m = copy_message(&events, "h2");
    assert!(
        m.contains("unreachable; copied") && m.contains("directly"),
        "{m}"
    );
    assert!(
        events.iter().any(|e| e["event"] == "message"
            && e["level"] == "warn"
            && e["text"]
                .as_str()
                .unwrap_or_default()
                .starts_with("h2: cannot reach the binary cache")),
        "a warning names the host"
    );
}

#[test]
fn doctor_checks_the_push_side_and_whether_each_host_reaches_the_cache() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(2).cache().up();
    sb.fault("h2", "no-cache");
    let out = sb
        .nixdeploy(&["doctor", "--flake", &sb.flake(), "--json"])
        .output();
    let report: Value = serde_json::from_str(&out.stdout).expect("doctor --json");
    let row = |host: Option<&str>, check: &str| -> String {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == check && c["host"].as_str() == host)
            .map(|c| c["status"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {check} row for {host:?}: {report}"))
    };
    assert_eq!(row(None, "cache.push"), "ok");
    assert_eq!(row(None, "cache.key"), "ok");
    assert_eq!(row(Some("h1"), "cache.reach"), "ok");
    assert_eq!(row(Some("h2"), "cache.reach"), "warn");
}

#[test]
fn copy_via_cache_without_a_cache_in_the_inventory_stops_before_touching_a_host() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    sb.fresh_revs();
    let before = sb.store_paths("h1");
    let out = sb
        .nixdeploy(&["run", APPLY, "--flake", &sb.flake(), "--set", "via=cache"])
        .failure();
    out.assert_code(3);
    out.assert_stderr_contains("host h1 has no binary cache in the inventory");
    assert_eq!(sb.store_paths("h1"), before, "nothing was copied");
    assert!(sb.activations("h1").is_empty(), "nothing was activated");
}

#[test]
fn the_rolling_runbook_and_nixdeploy_apply_take_via_cache() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(2).cache().up();
    sb.fresh_revs();
    let rolling = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks/rolling.rhai");
    let events = sb
        .nixdeploy(&[
            "run",
            rolling,
            "--flake",
            &sb.flake(),
            "--set",
            "via=cache",
            "--json",
        ])
        .success()
        .json_lines();
    for h in ["h1", "h2"] {
        assert_eq!(sb.current_system(h), Some(sb.build_toplevel(h)), "{h}");
        assert!(copy_message(&events, h).starts_with("fetched "), "{h}");
    }
    sb.fresh_revs();
    let events = sb
        .nixdeploy(&["apply", "--flake", &sb.flake(), "--via", "cache", "--json"])
        .success()
        .json_lines();
    for h in ["h1", "h2"] {
        assert_eq!(sb.current_system(h), Some(sb.build_toplevel(h)), "{h}");
        assert!(copy_message(&events, h).starts_with("fetched "), "{h}");
    }
}

#[test]
fn the_cache_host_survives_another_up_and_down_removes_it() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(1).cache().up();
    let state = || -> Value {
        serde_json::from_str(&fs::read_to_string(sb.dir().join("state.json")).unwrap()).unwrap()
    };
    let status = sb.status();
    assert_eq!(status["cache"]["up"], true, "{status}");
    assert!(status["cache"]["url"]
        .as_str()
        .unwrap()
        .ends_with(".250:8080"));
    let pid = state()["cache"]["httpd_pid"].as_u64().unwrap() as u32;
    let netns = state()["cache"]["netns"].as_str().unwrap().to_string();
    assert!(common::process_alive(pid));

    sb.up_again(1, 0).assert_code(0);
    assert_eq!(
        state()["cache"]["httpd_pid"].as_u64(),
        Some(pid as u64),
        "an up without --cache keeps the running cache host"
    );

    sb.down();
    assert!(!common::process_alive(pid), "httpd is stopped");
    assert!(
        !common::netns_list().contains(&netns),
        "its namespace is gone"
    );
}
