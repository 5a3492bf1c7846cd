//! The sandbox flake at `DIR/flake`: a flake without inputs whose hosts come from `fleet.json`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Map, Value};

use super::state::{write_atomic, HostState, Role};

/// The flake itself (static; behaviour comes from `fleet.json`).
const FLAKE_NIX: &str = include_str!("flake/flake.nix");
/// The body of every host's `bin/switch-to-configuration`.
const SWITCH_BODY: &str = include_str!("flake/switch-to-configuration.sh");
/// A lock file for a flake without inputs, written up front so parallel evaluations never race
/// to create it.
const FLAKE_LOCK: &str =
    "{\n  \"nodes\": {\n    \"root\": {}\n  },\n  \"root\": \"root\",\n  \"version\": 7\n}\n";
/// The static busybox every derivation is built with.
pub const BUSYBOX: &str = "/bin/busybox";

/// The packages every host gets unless `fleet.json` says otherwise.
const PACKAGES: [(&str, &str); 5] = [
    ("openssl", "3.0.13"),
    ("glibc", "2.38"),
    ("systemd", "254.6"),
    ("linux", "6.6.1"),
    ("nginx", "1.24.0"),
];

/// Writes (or refreshes) the flake in `flake_dir`; existing `fleet.json` edits are kept, only
/// addresses, the ssh config path and the set of hosts are brought up to date.
pub fn write(
    flake_dir: &Path,
    ssh_config: &Path,
    hosts: &[HostState],
    size_kib: u64,
) -> anyhow::Result<()> {
    let bin = flake_dir.join("bb/bin");
    fs::create_dir_all(&bin).with_context(|| format!("failed to create {}", bin.display()))?;
    let busybox = bin.join("busybox");
    if !same_file_contents(Path::new(BUSYBOX), &busybox) {
        fs::copy(BUSYBOX, &busybox)
            .with_context(|| format!("failed to copy {BUSYBOX} to {}", busybox.display()))?;
    }
    write_if_changed(&flake_dir.join("flake.nix"), FLAKE_NIX)?;
    write_if_changed(&flake_dir.join("switch-to-configuration.sh"), SWITCH_BODY)?;
    let lock = flake_dir.join("flake.lock");
    if !lock.exists() {
        fs::write(&lock, FLAKE_LOCK)?;
    }
    let fleet_path = fleet_json(flake_dir);
    let existing = match fs::read_to_string(&fleet_path) {
        Ok(text) => Some(
            serde_json::from_str(&text)
                .with_context(|| format!("failed to parse {}", fleet_path.display()))?,
        ),
        Err(_) => None,
    };
    let fleet = merge_fleet(existing, ssh_config, hosts, size_kib);
    let text = serde_json::to_string_pretty(&fleet)? + "\n";
    if fs::read_to_string(&fleet_path).ok().as_deref() != Some(text.as_str()) {
        write_atomic(&fleet_path, text.as_bytes())?;
    }
    Ok(())
}

/// `DIR/flake/fleet.json`.
pub fn fleet_json(flake_dir: &Path) -> PathBuf {
    flake_dir.join("fleet.json")
}

fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<()> {
    if fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))
}

fn same_file_contents(a: &Path, b: &Path) -> bool {
    match (fs::read(a), fs::read(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The default tags of target `hN`: `sandbox`, `web` (odd) or `db` (even), and `canary` for h1.
pub fn default_tags(name: &str) -> Vec<&'static str> {
    let n: u32 = name.trim_start_matches('h').parse().unwrap_or(0);
    let mut tags = vec!["sandbox"];
    if n == 1 {
        tags.push("canary");
    }
    tags.push(if n % 2 == 1 { "web" } else { "db" });
    tags
}

/// Brings `fleet.json` up to date with the hosts that exist, keeping every other edit.
fn merge_fleet(
    existing: Option<Value>,
    ssh_config: &Path,
    hosts: &[HostState],
    size_kib: u64,
) -> Value {
    let mut fleet = match existing {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    fleet.insert("sshConfig".into(), json!(ssh_config));
    fleet.entry("packages").or_insert_with(|| {
        Value::Object(
            PACKAGES
                .iter()
                .map(|(p, v)| ((*p).to_owned(), json!(v)))
                .collect(),
        )
    });
    fleet.entry("sharedKiB").or_insert(json!(size_kib / 2));
    let unique_kib = size_kib - size_kib / 2;
    for (key, role) in [("hosts", Role::Host), ("builders", Role::Builder)] {
        let old = match fleet.remove(key) {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let mut new = Map::new();
        for host in hosts.iter().filter(|h| h.role == role) {
            let mut entry = match old.get(&host.name) {
                Some(Value::Object(map)) => map.clone(),
                _ => default_entry(host, unique_kib),
            };
            entry.insert("address".into(), json!(host.address));
            new.insert(host.name.clone(), Value::Object(entry));
        }
        fleet.insert(key.into(), Value::Object(new));
    }
    Value::Object(fleet)
}

fn default_entry(host: &HostState, unique_kib: u64) -> Map<String, Value> {
    let value = match host.role {
        Role::Host => json!({
            "tags": default_tags(&host.name),
            "system": "x86_64-linux",
            "rev": 1,
            "uniqueKiB": unique_kib,
            "behavior": "ok",
            "packages": {},
            "buildOn": "local",
            "keys": {},
        }),
        Role::Builder => json!({
            "systems": ["aarch64-linux"],
            "maxJobs": 2,
            "speedFactor": 1,
        }),
    };
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, role: Role) -> HostState {
        HostState {
            name: name.into(),
            role,
            address: format!("10.77.1.{}", name.len()),
            netns: String::new(),
            veth: String::new(),
            sshd_pid: None,
            access: None,
        }
    }

    #[test]
    fn tags_follow_the_numbering() {
        assert_eq!(default_tags("h1"), ["sandbox", "canary", "web"]);
        assert_eq!(default_tags("h2"), ["sandbox", "db"]);
        assert_eq!(default_tags("h3"), ["sandbox", "web"]);
    }

    #[test]
    fn merging_keeps_edits_and_drops_removed_hosts() {
        let hosts = [host("h1", Role::Host), host("b1", Role::Builder)];
        let mut fleet = merge_fleet(None, Path::new("/d/ssh_config"), &hosts, 1024);
        assert_eq!(fleet["sharedKiB"], 512);
        assert_eq!(fleet["hosts"]["h1"]["uniqueKiB"], 512);
        fleet["hosts"]["h1"]["rev"] = json!(7);
        fleet["hosts"]["h9"] = json!({});
        let merged = merge_fleet(Some(fleet), Path::new("/d/ssh_config"), &hosts, 1024);
        assert_eq!(merged["hosts"]["h1"]["rev"], 7);
        assert!(merged["hosts"].get("h9").is_none());
        assert_eq!(merged["builders"]["b1"]["maxJobs"], 2);
    }
}
