//! Ctrl-C during a run: the first starts nothing new and ends with the summary (exit 130), the
//! second abandons in-flight work at once, and armed hosts are rolled back at the end.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, runbook, Sandbox};

/// A run in the background whose stdout and stderr lines are collected as they arrive.
struct Background {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    pipe: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (lines, reader)
}

impl Background {
    fn start(sb: &Sandbox, book: &Path, extra: &[&str]) -> Background {
        let mut child = Command::new(common::BIN)
            .args(["run".as_ref(), book.as_os_str()])
            .args(["--flake", &sb.flake()])
            .args(extra)
            .env("NIXDEPLOY_STATE_DIR", sb.state_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nixdeploy");
        let (stdout, a) = collect(child.stdout.take().unwrap());
        let (stderr, b) = collect(child.stderr.take().unwrap());
        Background {
            child,
            stdout,
            stderr,
            readers: vec![a, b],
        }
    }

    fn sigint(&self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        assert_eq!(rc, 0, "kill -INT failed");
    }

    /// The JSON events seen so far.
    fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for the exit (panicking after `limit`) and returns (code, stdout, stderr).
    fn finish(mut self, limit: Duration) -> (Option<i32>, String, String) {
        let end = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                panic!(
                    "nixdeploy still running {limit:?} later:\n{}",
                    self.stderr.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let out = self.stdout.lock().unwrap().join("\n");
        let err = self.stderr.lock().unwrap().join("\n");
        (status.code(), out, err)
    }
}

/// `exec` step events of one state, per host.
fn exec_hosts(events: &[serde_json::Value], state: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "step" && e["step"] == "exec" && e["state"] == state)
        .filter_map(|e| e["host"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_first_interrupt_starts_no_new_host_and_skips_later_steps() {
    if !common::skip_unless_root() {
        return;
    }
    let hosts = ["h1", "h2", "h3", "h4"];
    let sb = Sandbox::up(4);
    sb.edit_fleet(|f| {
        for h in hosts {
            f["hosts"][h]["rev"] = common::unique_rev().into();
        }
    });
    let stores: Vec<_> = hosts.iter().map(|h| sb.store_paths(h)).collect();
    let book = runbook(
        &sb,
        "slow.rhai",
        "exec(hosts(), \"sleep 3\");\ncopy(build(hosts()));\n",
    );
    let run = Background::start(&sb, &book, &["--parallel", "1", "--json"]);
    assert!(
        eventually(Duration::from_secs(60), || !exec_hosts(
            &run.events(),
            "started"
        )
        .is_empty()),
        "no exec ever started"
    );
    run.sigint();
    let interrupted = Instant::now();
    let (code, stdout, stderr) = run.finish(Duration::from_secs(30));
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let all = format!("{stdout}\n{stderr}");

    assert_eq!(code, Some(130), "{all}");
    // The in-flight exec (sleep 3) finished; nothing waited for the other hosts' sleeps.
    assert!(interrupted.elapsed() < Duration::from_secs(8), "{all}");
    let started = exec_hosts(&events, "started");
    assert_eq!(
        started.len(),
        1,
        "exec started on more hosts after the interrupt: {all}"
    );
    let succeeded = exec_hosts(&events, "succeeded");
    assert_eq!(
        succeeded, started,
        "the in-flight exec did not finish: {all}"
    );
    assert!(
        events.iter().any(|e| e["event"] == "run_finished"),
        "no final summary: {all}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["step"] == "copy" || e["step"] == "build"),
        "later steps ran: {all}"
    );
    for (h, before) in hosts.iter().zip(&stores) {
        assert_eq!(&sb.store_paths(h), before, "{h}'s store changed: {all}");
    }
}

#[test]
fn a_second_interrupt_abandons_in_flight_work_at_once() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(2);
    let book = runbook(&sb, "long.rhai", "exec(hosts(), \"sleep 30\");\n");
    let run = Background::start(&sb, &book, &["--json"]);
    assert!(
        eventually(Duration::from_secs(60), || exec_hosts(
            &run.events(),
            "started"
        )
        .len()
            == 2),
        "exec never started on both hosts"
    );
    run.sigint();
    std::thread::sleep(Duration::from_millis(300));
    run.sigint();
    let second = Instant::now();
    let (code, stdout, stderr) = run.finish(Duration::from_secs(20));
    let all = format!("{stdout}\n{stderr}");
    assert!(
        second.elapsed() < Duration::from_secs(5),
        "took {:?} to abort: {all}",
        second.elapsed()
    );
    assert_eq!(code, Some(130), "{all}");
    assert!(all.contains("aborted by a second interrupt"), "{all}");
}

#[test]
fn an_interrupt_during_manual_confirmation_rolls_the_armed_hosts_back() {
    if !common::skip_unless_root() {
        return;
    }
    let hosts = ["h1", "h2"];
    let sb = Sandbox::up(2);
    let base = runbook(
        &sb,
        "base.rhai",
        "let r = activate(copy(build(hosts())), #{ confirm_timeout: 5 });\nif !r.ok { throw \"baseline\"; }\n",
    );
    sb.nixdeploy(&["run"])
        .args(&[base.as_os_str()])
        .args(&["--flake", &sb.flake()])
        .success();
    let before: Vec<String> = hosts
        .iter()
        .map(|h| sb.current_system(h).unwrap())
        .collect();
    sb.edit_fleet(|f| {
        for h in hosts {
            f["hosts"][h]["rev"] = common::unique_rev().into();
        }
    });
    let book = runbook(
        &sb,
        "manual.rhai",
        "let r = activate(copy(build(hosts())), #{ confirm: \"manual\", confirm_timeout: 60 });\nsleep(60);\nconfirm(r);\n",
    );
    let run = Background::start(&sb, &book, &[]);
    let all_new = eventually(Duration::from_secs(90), || {
        hosts
            .iter()
            .zip(&before)
            .all(|(h, old)| sb.current_system(h).is_some_and(|s| &s != old))
    });
    assert!(all_new, "the hosts never showed the new system");
    run.sigint();
    let interrupted = Instant::now();
    let (code, stdout, stderr) = run.finish(Duration::from_secs(40));
    let all = format!("{stdout}\n{stderr}");
    assert!(code.is_some_and(|c| c != 0), "{all}");
    // Rolled back by the run's settle, well before the 60 s confirm timeout.
    assert!(interrupted.elapsed() < Duration::from_secs(30), "{all}");
    for (h, old) in hosts.iter().zip(&before) {
        assert_eq!(sb.current_system(h).as_ref(), Some(old), "{h}: {all}");
        assert_eq!(
            sb.profile_target(h).as_ref(),
            Some(old),
            "{h}'s profile: {all}"
        );
    }
    assert!(all.contains("rolled back"), "{all}");
}
