//! Remote output as bytes: non-UTF-8 output is returned (lossily decoded), exit status 127 is
//! an ordinary status, and a flood of output is capped per host and stream, reported
//! `truncated`, and keeps nixdeploy's memory small.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{runbook, Sandbox};

#[test]
fn exec_returns_non_utf8_output_and_exit_127_is_a_normal_status() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let book = runbook(
        &sb,
        "bytes.rhai",
        r#"
let out = exec(hosts(), "printf 'caf\\351\\nafter the bad byte\\n'; printf 'err\\377\\n' >&2");
let e = out["h1"];
if e.status != 0 { throw `status ${e.status}`; }
if e.stdout != "caf\uFFFD\nafter the bad byte\n" { throw `stdout was ${e.stdout}`; }
if !e.stderr.starts_with("err") { throw `stderr was ${e.stderr}`; }
if e.truncated { throw "small output marked truncated"; }
let missing = exec(hosts(), "no-such-command-anywhere");
if missing.ok || missing["h1"].status != 127 { throw `127 lost: ${missing["h1"]}`; }
print("bytes ok");
"#,
    );
    let out = common::run(&sb, &book, &[]);
    // The runbook looked at the failed step, so the run itself succeeds.
    out.assert_success();
    assert!(!out.stderr.contains("lost the connection"), "{out}");
    assert!(out.stderr.contains("exit status 127"), "{out}");
    assert!(
        out.stdout.contains("bytes ok") || out.stderr.contains("bytes ok"),
        "{out}"
    );
}

/// Peak resident memory (`VmHWM`, KiB) of a running process, if it is still running.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[test]
fn a_flood_of_output_on_four_hosts_is_capped_truncated_and_keeps_memory_small() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(4);
    // 64 MiB of zero bytes (no newlines at all) on each host, then a last line.
    let book = runbook(
        &sb,
        "flood.rhai",
        r#"
let out = exec(hosts(), "head -c 67108864 /dev/zero; echo; echo the-end");
for h in hosts() {
    let e = out[h.name];
    if !e.truncated { throw `${h.name} not truncated`; }
    if e.stdout.len() > 1100000 { throw `${h.name} kept ${e.stdout.len()} bytes`; }
    if !e.stdout.contains("bytes of output dropped here") { throw `${h.name}: no marker`; }
    if !e.stdout.ends_with("the-end\n") { throw `${h.name}: lost the tail`; }
}
print("flood ok");
"#,
    );
    let mut child = common::run_command(&sb, &book, &["--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Drain the pipes on threads so nixdeploy never blocks on them while we sample.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut so, &mut s).ok();
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut se, &mut s).ok();
        s
    });
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out_t.join().unwrap(), err_t.join().unwrap());
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("flood ok") || stderr.contains("flood ok"));
    assert!(
        stdout.contains("see `max_output`") || stderr.contains("see `max_output`"),
        "no truncation warning: {stdout}\n{stderr}"
    );
    eprintln!("nixdeploy VmHWM: {peak} KiB");
    assert!(peak > 0, "never sampled nixdeploy's memory");
    assert!(peak < 64 * 1024, "nixdeploy peaked at {peak} KiB");
}
