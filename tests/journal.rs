//! `nixdeploy log` and the journal it reads, driven through the real binary.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use nixdeploy::fleet::HostName;
use nixdeploy::journal::{Journal, Record, RunMeta, State};

const BEFORE: &str = "/nix/store/2raac275ma78k0yqv8kcydpsdj8cqn6h-nixos-system-web-1-23.11";
const AFTER: &str = "/nix/store/d0x4sjwksanirbaxlb05009gy5lvia3q-nixos-system-web-1-24.05";

/// Set in a child process of this test binary to make it an appender (see below).
const APPENDER_ENV: &str = "NIXDEPLOY_TEST_APPENDER_DIR";
const THREADS: usize = 4;
const PROCESSES: usize = 3;
const PER_WRITER: usize = 25;
const MESSAGE_LEN: usize = 20_000;

fn record(host: &str, state: State) -> Record {
    let mut record = RunMeta::current("runbooks/apply.rhai", Some("web-*"), ".")
        .record(HostName::new(host), state);
    record.path_before = Some(BEFORE.into());
    record.path_after = Some(AFTER.into());
    record.generation = Some(42);
    record.duration_ms = 1_500;
    record
}

fn log(state_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nixdeploy"))
        .arg("log")
        .args(args)
        .env("NIXDEPLOY_STATE_DIR", state_dir)
        .output()
        .expect("failed to run nixdeploy")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The data rows of the table (everything after the header).
fn rows(output: &Output) -> Vec<String> {
    stdout(output).lines().skip(1).map(String::from).collect()
}

/// Appends `PER_WRITER` long records one at a time; long lines make interleaving
/// likely if locking or single-write appends were broken.
fn append_many(dir: &Path, writer: &str) {
    let journal = Journal::open(dir);
    for i in 0..PER_WRITER {
        let mut big = record(&format!("{writer}-{i}"), State::Deployed);
        big.message = Some("x".repeat(MESSAGE_LEN));
        journal.append(&[big]).unwrap();
    }
}

#[test]
fn log_shows_every_record_with_its_state_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path());
    journal
        .append(&[
            record("web-1", State::Deployed),
            record("web-2", State::Failed),
        ])
        .unwrap();
    journal
        .append(&[record("web-1", State::RolledBack)])
        .unwrap();

    let output = log(dir.path(), &[]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(text.starts_with("TIME"), "{text}");
    let rows = rows(&output);
    assert_eq!(rows.len(), 3, "{text}");
    assert!(
        rows[0].contains("web-1") && rows[0].contains("deployed"),
        "{text}"
    );
    assert!(
        rows[1].contains("web-2") && rows[1].contains("failed"),
        "{text}"
    );
    assert!(rows[2].contains("rolled back"), "{text}");
    assert!(
        rows[0].contains("nixos-system-web-1-23.11 → nixos-system-web-1-24.05"),
        "{text}"
    );
    assert!(rows[0].contains("42") && rows[0].contains("1.5s"), "{text}");
}

#[test]
fn log_host_shows_only_that_hosts_history() {
    let dir = tempfile::tempdir().unwrap();
    Journal::open(dir.path())
        .append(&[
            record("web-1", State::Deployed),
            record("db-1", State::Unchanged),
            record("web-1", State::Unchanged),
        ])
        .unwrap();

    let output = log(dir.path(), &["web-1"]);
    assert!(output.status.success(), "{output:?}");
    let rows = rows(&output);
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.contains("web-1")));
    assert!(rows[0].contains("deployed") && rows[1].contains("unchanged"));
}

#[test]
fn log_on_filters_by_name_globs_and_exclusions() {
    let dir = tempfile::tempdir().unwrap();
    Journal::open(dir.path())
        .append(&[
            record("web-1", State::Deployed),
            record("web-2", State::Deployed),
            record("db-1", State::Deployed),
        ])
        .unwrap();

    let output = log(dir.path(), &["--on", "web-*,!web-2"]);
    assert!(output.status.success(), "{output:?}");
    let rows = rows(&output);
    assert_eq!(rows.len(), 1);
    assert!(rows[0].contains("web-1"));
}

#[test]
fn log_on_a_tag_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = log(dir.path(), &["--on", "@db"]);
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("host names"));
}

#[test]
fn log_json_round_trips_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let written = vec![
        record("web-1", State::Deployed),
        record("web-2", State::Planned),
    ];
    Journal::open(dir.path()).append(&written).unwrap();

    let output = log(dir.path(), &["--json"]);
    assert!(output.status.success(), "{output:?}");
    let read: Vec<Record> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(read, written);
}

#[test]
fn an_empty_journal_says_so_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let output = log(dir.path(), &[]);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout(&output).contains("no deployments recorded yet"));

    let output = log(dir.path(), &["web-9"]);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout(&output).contains("no records for host `web-9`"));

    let output = log(dir.path(), &["--json"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output), "");
}

#[test]
fn a_torn_last_line_is_skipped_with_one_warning_and_earlier_records_still_show() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path());
    journal
        .append(&[
            record("web-1", State::Deployed),
            record("web-2", State::Deployed),
        ])
        .unwrap();
    // Simulate a crash halfway through writing the next record.
    let line = serde_json::to_string(&record("web-3", State::Deployed)).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(journal.path())
        .unwrap();
    file.write_all(&line.as_bytes()[..line.len() / 2]).unwrap();
    drop(file);

    let output = log(dir.path(), &[]);
    assert!(output.status.success(), "{output:?}");
    let rows = rows(&output);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(!rows.iter().any(|r| r.contains("web-3")));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    assert!(stderr.contains("partial last record"), "{stderr}");
}

/// Not a test on its own: when re-run as a child with `APPENDER_ENV` set, this appends
/// records from a separate process for the concurrency test below.
#[test]
fn appender_process() {
    if let Some(dir) = std::env::var_os(APPENDER_ENV) {
        append_many(Path::new(&dir), &format!("process-{}", std::process::id()));
    }
}

#[test]
fn concurrent_appends_from_threads_and_processes_leave_only_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "appender_process", "--test-threads=1"])
                .env(APPENDER_ENV, dir.path())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let dir = dir.path();
            scope.spawn(move || append_many(dir, &format!("thread-{t}")));
        }
        // Readers running meanwhile must never see (or warn about) a half-written line.
        scope.spawn(|| {
            for _ in 0..5 {
                let output = log(dir.path(), &["--json"]);
                assert!(output.status.success(), "{output:?}");
                assert!(output.stderr.is_empty(), "{output:?}");
            }
        });
    });
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }

    let text = std::fs::read_to_string(Journal::open(dir.path()).path()).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), (THREADS + PROCESSES) * PER_WRITER);
    for line in lines {
        let record: Record = serde_json::from_str(line).expect("every line is a whole record");
        assert_eq!(record.message.as_deref().map(str::len), Some(MESSAGE_LEN));
    }
}
