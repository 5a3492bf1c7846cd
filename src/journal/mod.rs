//! The deployment journal: one JSON line per host and run in `journal.jsonl`, appended crash-safely.

mod filter;
mod lock;
mod record;
mod time;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use filter::HostFilter;
pub use record::{Record, RunMeta, State};
pub use time::rfc3339;

use lock::FileLock;

/// The journal file inside the state directory.
const JOURNAL_FILE: &str = "journal.jsonl";
/// The sibling file that appenders lock, so concurrent runs never interleave lines.
const LOCK_FILE: &str = "journal.lock";

/// The journal of one state directory. Opening does no I/O; a missing file reads as empty.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

/// What reading the journal found, including the lines it had to skip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    /// The readable records, oldest first.
    pub records: Vec<Record>,
    /// The file ends in a partial line (a run died while writing it).
    pub torn_tail: bool,
    /// 1-based numbers of complete lines that are not records.
    pub unreadable_lines: Vec<usize>,
}

impl Contents {
    /// The warnings a reader should show about skipped lines, if any.
    pub fn warnings(&self, journal: &Path) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.torn_tail {
            warnings.push(format!(
                "{}: ignored a partial last record (a run was probably interrupted while writing it)",
                journal.display()
            ));
        }
        if !self.unreadable_lines.is_empty() {
            let numbers: Vec<String> = self.unreadable_lines.iter().map(usize::to_string).collect();
            warnings.push(format!(
                "{}: skipped unreadable lines {}",
                journal.display(),
                numbers.join(", ")
            ));
        }
        warnings
    }
}

impl Journal {
    /// The journal in `dir` (`dir/journal.jsonl`).
    pub fn open(dir: impl Into<PathBuf>) -> Journal {
        Journal { dir: dir.into() }
    }

    /// The journal in [`crate::paths::state_dir`].
    pub fn default_location() -> Journal {
        Journal::open(crate::paths::state_dir())
    }

    /// The path of the journal file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    /// Appends records, one JSON line each, in a single `write` under an exclusive lock,
    /// then syncs the file. If an earlier writer died mid-line, a newline is written first
    /// so the partial line cannot swallow the new records.
    pub fn append(&self, records: &[Record]) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let path = self.path();
        std::fs::create_dir_all(&self.dir).with_context(|| {
            format!(
                "failed to create the state directory {}",
                self.dir.display()
            )
        })?;
        let lock_path = self.dir.join(LOCK_FILE);
        let _lock = FileLock::exclusive(&lock_path)
            .with_context(|| format!("failed to lock {}", lock_path.display()))?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .with_context(|| format!("failed to open the journal {}", path.display()))?;
        let mut buffer = Vec::new();
        if ends_mid_line(&file).with_context(|| format!("failed to read {}", path.display()))? {
            buffer.push(b'\n');
        }
        for record in records {
            serde_json::to_writer(&mut buffer, record)
                .context("failed to encode a journal record")?;
            buffer.push(b'\n');
        }
        // One write of the whole batch; write_all only loops if the kernel writes short.
        file.write_all(&buffer)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("failed to append to the journal {}", path.display()))
    }

    /// Reads every record, skipping a torn last line and unreadable lines (see [`Contents`]).
    pub fn load(&self) -> anyhow::Result<Contents> {
        let path = self.path();
        // A shared lock keeps us from reading a line an appender is still writing.
        let _lock = FileLock::shared(&self.dir.join(LOCK_FILE)).ok();
        let mut text = Vec::new();
        match File::open(&path) {
            Ok(mut file) => file
                .read_to_end(&mut text)
                .with_context(|| format!("failed to read the journal {}", path.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Contents::default())
            }
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("failed to open the journal {}", path.display()))
            }
        };
        Ok(parse(&text))
    }

    /// Reads every record, printing one warning per kind of skipped line to stderr.
    pub fn read(&self) -> anyhow::Result<Vec<Record>> {
        let contents = self.load()?;
        for warning in contents.warnings(&self.path()) {
            eprintln!("warning: {warning}");
        }
        Ok(contents.records)
    }

    /// The records of the hosts `filter` selects, oldest first.
    pub fn read_filtered(&self, filter: &HostFilter) -> anyhow::Result<Vec<Record>> {
        let mut records = self.read()?;
        records.retain(|r| filter.matches(r.host.as_str()));
        Ok(records)
    }

    /// One host's history, oldest first.
    pub fn records_for(&self, host: &str) -> anyhow::Result<Vec<Record>> {
        let mut records = self.read()?;
        records.retain(|r| r.host.as_str() == host);
        Ok(records)
    }
}

/// Whether a non-empty file's last byte is something other than a newline.
fn ends_mid_line(file: &File) -> std::io::Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] != b'\n')
}

/// Splits the journal into records; a last line without its newline is torn.
fn parse(text: &[u8]) -> Contents {
    let mut contents = Contents::default();
    let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    // After a final newline `split` yields an empty tail; anything else there is torn.
    let tail = lines.pop().unwrap_or_default();
    contents.torn_tail = !tail.is_empty();
    for (index, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(record) => contents.records.push(record),
            Err(_) => contents.unreadable_lines.push(index + 1),
        }
    }
    contents.records = latest_per_run_and_host(std::mem::take(&mut contents.records));
    contents
}

/// A run appends a `progress` record for a host when the host finishes and a complete one when
/// the run ends: a progress record is dropped when a later record of the same run and host
/// exists (a run killed outright leaves only its progress records, which then stand).
fn latest_per_run_and_host(records: Vec<Record>) -> Vec<Record> {
    let mut last = std::collections::HashMap::new();
    for (i, r) in records.iter().enumerate() {
        last.insert((r.run_id.clone(), r.host.clone()), i);
    }
    records
        .into_iter()
        .enumerate()
        .filter(|(i, r)| !r.progress || last.get(&(r.run_id.clone(), r.host.clone())) == Some(i))
        .map(|(_, r)| r)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::HostName;

    fn record(host: &str) -> Record {
        RunMeta::current("apply.rhai", None, ".").record(HostName::new(host), State::Deployed)
    }

    #[test]
    fn a_missing_journal_reads_as_empty_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path().join("state"));
        assert_eq!(journal.load().unwrap(), Contents::default());
        assert!(!dir.path().join("state").exists());
    }

    #[test]
    fn appended_records_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path());
        journal.append(&[record("a"), record("b")]).unwrap();
        journal.append(&[record("c")]).unwrap();
        let hosts: Vec<String> = journal
            .read()
            .unwrap()
            .iter()
            .map(|r| r.host.to_string())
            .collect();
        assert_eq!(hosts, ["a", "b", "c"]);
        assert_eq!(journal.records_for("b").unwrap().len(), 1);
    }

    #[test]
    fn a_later_record_of_the_same_run_and_host_supersedes_the_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path());
        let meta = RunMeta::current("apply.rhai", None, ".");
        let other = RunMeta {
            run_id: "other".into(),
            ..meta.clone()
        };
        let mut progress = meta.record(HostName::new("a"), State::Deployed);
        progress.progress = true;
        journal.append(&[progress]).unwrap();
        journal
            .append(&[other.record(HostName::new("a"), State::Failed)])
            .unwrap();
        journal
            .append(&[
                meta.record(HostName::new("a"), State::RolledBack),
                meta.record(HostName::new("b"), State::Deployed),
            ])
            .unwrap();
        let states: Vec<(String, State)> = journal
            .read()
            .unwrap()
            .iter()
            .map(|r| (r.host.to_string(), r.state))
            .collect();
        assert_eq!(
            states,
            [
                ("a".to_string(), State::Failed),
                ("a".to_string(), State::RolledBack),
                ("b".to_string(), State::Deployed)
            ]
        );
    }

    #[test]
    fn an_append_after_a_torn_line_starts_on_a_fresh_line() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path());
        journal.append(&[record("a")]).unwrap();
        let line = serde_json::to_string(&record("b")).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(journal.path())
            .unwrap();
        file.write_all(&line.as_bytes()[..line.len() / 2]).unwrap();
        assert!(journal.load().unwrap().torn_tail);
        journal.append(&[record("c")]).unwrap();
        let contents = journal.load().unwrap();
        let hosts: Vec<String> = contents
            .records
            .iter()
            .map(|r| r.host.to_string())
            .collect();
        assert_eq!(hosts, ["a", "c"]);
        assert!(!contents.torn_tail);
        assert_eq!(contents.unreadable_lines, [2]);
    }
}
