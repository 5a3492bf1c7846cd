//! The sandbox's state file (`DIR/state.json`): every kernel object, file and process it created.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The state file's name inside the sandbox directory.
pub const STATE_FILE: &str = "state.json";

/// What a sandbox host is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A deploy target `hN`.
    Host,
    /// A remote builder `bN` (a host that also builds `aarch64-linux`).
    Builder,
}

/// One host as created by `up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// `h1`…`hN` or `b1`…`bN`.
    pub name: String,
    /// Target or builder.
    pub role: Role,
    /// Its IPv4 address on the sandbox bridge.
    pub address: String,
    /// The network namespace (`nd<id>-h1`).
    pub netns: String,
    /// The root-namespace end of its veth pair (same name as the namespace).
    pub veth: String,
    /// The pid of its sshd, once started.
    pub sshd_pid: Option<u32>,
    /// How it treats its non-root login, as it was started.
    #[serde(default)]
    pub access: Option<super::users::Access>,
}

/// The whole state of one sandbox directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The short id used in every kernel object name.
    pub id: String,
    /// `K` of the sandbox's subnet `10.77.K.0/24`, once allocated.
    pub subnet: Option<u8>,
    /// The bridge the hosts' veths are attached to.
    pub bridge: String,
    /// Every host, targets first, in name order.
    pub hosts: Vec<HostState>,
    /// The binary cache host, when brought up with `--cache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<super::cache::CacheState>,
}

impl State {
    /// A fresh state for the sandbox in `dir` (an absolute, canonical path).
    pub fn new(dir: &Path) -> State {
        let id = short_id(dir);
        State {
            bridge: format!("nd{id}-br"),
            id,
            subnet: None,
            hosts: Vec::new(),
            cache: None,
        }
    }

    /// Reads `dir/state.json`; `None` when there is none.
    pub fn load(dir: &Path) -> anyhow::Result<Option<State>> {
        let path = dir.join(STATE_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("failed to parse {}", path.display()))
                .map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
        }
    }

    /// Writes `dir/state.json` atomically.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        write_atomic(&dir.join(STATE_FILE), text.as_bytes())
    }

    /// The namespace name of host `name` (`nd<id>-h1`, at most 15 characters).
    pub fn netns_name(&self, name: &str) -> String {
        format!("nd{}-{name}", self.id)
    }
}

/// Six hex digits derived from the directory path (FNV-1a), so names stay short and stable.
pub fn short_id(dir: &Path) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in dir.as_os_str().as_encoded_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{:06x}", hash & 0x00ff_ffff)
}

/// Writes a file through a temporary sibling and a rename, so readers never see half of it.
pub fn write_atomic(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).with_context(|| format!("failed to write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("failed to rename to {}", path.display()))
}

/// An exclusive `flock` held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    /// The lock file.
    pub path: PathBuf,
}

impl Lock {
    /// Blocks until the exclusive lock on `path` (created if missing) is held.
    pub fn acquire(path: &Path) -> anyhow::Result<Lock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("failed to open lock file {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("failed to lock {}", path.display()));
        }
        Ok(Lock {
            _file: file,
            path: path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_in_an_interface_name() {
        let state = State::new(Path::new("/tmp/some/sandbox"));
        assert!(state.bridge.len() <= 15);
        assert!(state.netns_name("h64").len() <= 15);
        assert!(state.netns_name("b8").len() <= 15);
    }

    #[test]
    fn short_id_differs_between_directories() {
        assert_ne!(short_id(Path::new("/tmp/a")), short_id(Path::new("/tmp/b")));
        assert_eq!(short_id(Path::new("/tmp/a")), short_id(Path::new("/tmp/a")));
    }
}
