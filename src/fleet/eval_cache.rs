//! The evaluation cache: each host's evaluated inventory entry, kept across runs in the state
//! directory and keyed by what determines it, with a size bound.
//!
//! A key is the flake reference, the flake's `narHash` as Nix reports it (a hash of every file
//! Nix sees: a `path:` flake's whole directory, a git work tree's tracked files, dirty or not),
//! the host's name and a hash of `inventory.nix` (the expression that produced the entry). The
//! lock file is one of those files, so locked inputs are covered too. A flake without a
//! `narHash` is never cached. Entries store their whole key and are checked on read, so a
//! file-name collision is a miss, never a wrong answer.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{json, Value};

/// The cache directory under the state directory.
const DIR: &str = "eval-cache";

/// The most the cache may hold on disk; the oldest entries go first past it.
pub const MAX_BYTES: u64 = 32 * 1024 * 1024;

/// What determines one host's evaluated entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The flake reference given to Nix (`path:/x`, `git+file:///r?dir=sub`).
    pub flake: String,
    /// The flake's `narHash`.
    pub nar_hash: String,
    /// The host.
    pub host: String,
    /// The version of the inventory expression (a hash of its text).
    pub expression: String,
}

impl Key {
    fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.flake, self.nar_hash, self.host, self.expression
        )
    }

    fn file_name(&self) -> String {
        format!("{:016x}.json", fnv1a(self.text().as_bytes()))
    }
}

/// FNV-1a, 64 bits: a stable file name for a key (std's hasher may change between releases).
/// Collisions only cost a miss, since entries are checked against their full key; written
/// here because no hashing crate is in the tree and a cryptographic hash is not needed.
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The cache in one directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
}

impl Cache {
    /// The cache in `state_dir/eval-cache`.
    pub fn in_state_dir(state_dir: &Path) -> Cache {
        Cache {
            dir: state_dir.join(DIR),
            max_bytes: MAX_BYTES,
        }
    }

    /// The entry stored for `key`, if there is one and it was stored under this very key.
    pub fn get(&self, key: &Key) -> Option<Value> {
        let text = fs::read_to_string(self.dir.join(key.file_name())).ok()?;
        let stored: Value = serde_json::from_str(&text).ok()?;
        (stored["key"].as_str() == Some(key.text().as_str())).then(|| stored["entry"].clone())
    }

    /// Stores `entry` under `key`. A cache that cannot be written is not an error: the next
    /// run evaluates again.
    pub fn put(&self, key: &Key, entry: &Value) {
        if fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let text = json!({ "key": key.text(), "entry": entry }).to_string();
        let path = self.dir.join(key.file_name());
        let tmp = self
            .dir
            .join(format!(".{}.{}", key.file_name(), std::process::id()));
        if fs::write(&tmp, text).is_ok() && fs::rename(&tmp, &path).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Removes the least recently written entries until the cache fits its bound.
    pub fn trim(&self) {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = dir
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str, nar_hash: &str) -> Key {
        Key {
            flake: "path:/f".into(),
            nar_hash: nar_hash.into(),
            host: host.into(),
            expression: "1".into(),
        }
    }

    #[test]
    fn an_entry_is_found_only_under_the_key_it_was_stored_with() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::in_state_dir(dir.path());
        cache.put(&key("h1", "sha256-a"), &json!({ "toplevel": 1 }));
        assert_eq!(
            cache.get(&key("h1", "sha256-a")),
            Some(json!({ "toplevel": 1 }))
        );
        assert_eq!(cache.get(&key("h1", "sha256-b")), None, "flake changed");
        assert_eq!(cache.get(&key("h2", "sha256-a")), None, "another host");
    }

    #[test]
    fn a_colliding_file_name_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::in_state_dir(dir.path());
        let (a, b) = (key("h1", "sha256-a"), key("h1", "sha256-b"));
        cache.put(&a, &json!(1));
        fs::rename(
            dir.path().join(DIR).join(a.file_name()),
            dir.path().join(DIR).join(b.file_name()),
        )
        .unwrap();
        assert_eq!(cache.get(&b), None);
    }

    #[test]
    fn trimming_removes_the_oldest_entries_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::in_state_dir(dir.path());
        cache.max_bytes = 200;
        let old = key("old", "sha256-a");
        cache.put(&old, &json!("x".repeat(150)));
        let past = SystemTime::now() - std::time::Duration::from_secs(60);
        let file = fs::File::options()
            .write(true)
            .open(dir.path().join(DIR).join(old.file_name()))
            .unwrap();
        file.set_modified(past).unwrap();
        let new = key("new", "sha256-a");
        cache.put(&new, &json!("y".repeat(150)));
        cache.trim();
        assert_eq!(cache.get(&old), None);
        assert!(cache.get(&new).is_some());
    }
}
