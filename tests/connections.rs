//! Connections across runs: a run keeps each host's ssh master warm for the next run, which
//! reuses it after checking it still works; `disconnect` ends them; `--no-persist` keeps nothing.

mod common;

use std::path::Path;

use common::Sandbox;

/// How many logins the host's sshd has accepted so far.
fn logins(sb: &Sandbox, host: &str) -> usize {
    let log = std::fs::read_to_string(sb.host_root(host).join("run/sshd.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("Accepted publickey"))
        .count()
}

/// The persisted control sockets in the run's state directory.
fn sockets(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("ssh"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".sock"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_second_run_reuses_the_persisted_masters_and_disconnect_ends_them() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    let book = common::runbook(&sb, "touch.rhai", r#"exec(hosts(), "true");"#);
    common::run(&sb, &book, &[]).assert_success();
    assert_eq!(sockets(sb.state_dir()).len(), 2);
    let first = (logins(&sb, "h1"), logins(&sb, "h2"));
    assert_eq!(first, (1, 1));

    common::run(&sb, &book, &[]).assert_success();
    assert_eq!(
        (logins(&sb, "h1"), logins(&sb, "h2")),
        first,
        "the second run logged in again instead of reusing the masters"
    );

    sb.nixdeploy(&["disconnect"])
        .success()
        .assert_stdout_contains("ended 2 persisted connection(s)");
    assert!(sockets(sb.state_dir()).is_empty());
    common::run(&sb, &book, &[]).assert_success();
    assert_eq!(logins(&sb, "h1"), 2, "after disconnect a run logs in anew");
}

#[test]
fn a_persisted_master_whose_host_restarted_is_replaced_by_a_fresh_login() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let book = common::runbook(&sb, "touch.rhai", r#"exec(hosts(), "true");"#);
    common::run(&sb, &book, &[]).assert_success();
    sb.fault("h1", "sshd-down");
    sb.up_again(1, 0).assert_success();
    common::run(&sb, &book, &[]).assert_success();
}

#[test]
fn no_persist_leaves_no_master_behind() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let book = common::runbook(&sb, "touch.rhai", r#"exec(hosts(), "true");"#);
    common::run(&sb, &book, &["--no-persist"]).assert_success();
    assert!(sockets(sb.state_dir()).is_empty());
    common::run(&sb, &book, &["--no-persist"]).assert_success();
    assert_eq!(logins(&sb, "h1"), 2);
}

#[test]
fn a_fleet_that_cannot_fit_in_the_open_file_limit_is_refused_before_any_host_is_touched() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    let book = common::runbook(&sb, "touch.rhai", r#"exec(hosts(), "touch /run/touched");"#);
    // A hard limit too small for two hosts at once; the run cannot raise it.
    let out = std::process::Command::new("prlimit")
        .args(["--nofile=70:70", "--"])
        .arg(common::BIN)
        .args(["run"])
        .arg(&book)
        .args(["--flake", &sb.flake(), "--parallel", "2"])
        .env("NIXDEPLOY_STATE_DIR", sb.state_dir())
        .output()
        .expect("run prlimit");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("open files") && stderr.contains("ulimit -Hn"),
        "{stderr}"
    );
    assert!(!sb.host_root("h1").join("run/touched").exists());
}

#[test]
fn two_hundred_fifty_six_hosts_at_parallel_256_run_without_running_out_of_files() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::builder().hosts(256).size_kib(64).up();
    let book = common::runbook(&sb, "touch.rhai", r#"exec(hosts(), "touch /run/touched");"#);
    // The usual soft limit; nixdeploy raises it to the hard limit itself.
    let hard = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .expect("ulimit")
            .stdout,
    )
    .expect("utf-8");
    let out = std::process::Command::new("prlimit")
        .arg(format!("--nofile=1024:{}", hard.trim()))
        .arg("--")
        .arg(common::BIN)
        .arg("run")
        .arg(&book)
        .args(["--flake", &sb.flake(), "--parallel", "256", "--no-persist"])
        .env("NIXDEPLOY_STATE_DIR", sb.state_dir())
        .output()
        .expect("run prlimit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("256 host(s): 256 untouched"), "{stderr}");
    assert!(!stderr.contains("too many open files"), "{stderr}");
    for host in ["h1", "h189", "h190", "h256"] {
        assert!(sb.host_root(host).join("run/touched").exists(), "{host}");
    }
}
