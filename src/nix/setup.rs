//! The deploying machine's own Nix: whether it runs through a daemon or single-user, and the
//! options a single-user root Nix needs when the build users it is configured for do not exist.

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// The build-users group Nix uses as root when no configuration names one.
const DEFAULT_BUILD_USERS_GROUP: &str = "nixbld";

/// The daemon socket a multi-user Nix listens on.
pub const DAEMON_SOCKET: &str = "/nix/var/nix/daemon-socket/socket";

/// How this machine's Nix reaches its store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreAccess {
    /// Through `nix-daemon` (multi-user install, or `NIX_REMOTE=daemon`).
    Daemon,
    /// Directly, as the current user (a single-user install, or root on a multi-user one).
    SingleUser,
}

/// What nixdeploy found out about the local Nix without running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNix {
    /// Daemon or single-user.
    pub access: StoreAccess,
    /// Whether nixdeploy runs as root.
    pub root: bool,
    /// The `build-users-group` in force for a single-user root Nix (`None`: builds run as root).
    pub build_users_group: Option<String>,
    /// Whether that group exists on this machine.
    pub group_exists: bool,
}

impl LocalNix {
    /// Reads the environment, `nix.conf` and the group database.
    pub fn detect() -> LocalNix {
        let root = is_root();
        let nix_remote = std::env::var("NIX_REMOTE").unwrap_or_default();
        let access = decide_access(root, &nix_remote, Path::new(DAEMON_SOCKET).exists());
        let conf = conf_files()
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .chain(std::env::var("NIX_CONFIG").ok())
            .collect::<Vec<_>>();
        let build_users_group = configured_group(&conf);
        let group_exists = build_users_group.as_deref().is_some_and(group_exists);
        LocalNix {
            access,
            root,
            build_users_group,
            group_exists,
        }
    }

    /// Whether local builds would fail because the configured build users do not exist: a
    /// single-user Nix as root, whose `build-users-group` names a missing group (nix-bin
    /// installed without Debian's nix-setup-systemd, for example).
    pub fn missing_build_users(&self) -> bool {
        self.access == StoreAccess::SingleUser
            && self.root
            && self.build_users_group.is_some()
            && !self.group_exists
    }

    /// `--option` pairs every local Nix call gets so that it works as it is set up: builds run
    /// as root without build users when those are missing, as a single-user install does.
    pub fn options(&self) -> Vec<(String, String)> {
        if self.missing_build_users() {
            vec![("build-users-group".to_string(), String::new())]
        } else {
            Vec::new()
        }
    }
}

/// Nix's `store = auto`: root (or anyone who can write the store) works on it directly,
/// anyone else through the daemon when its socket exists; `NIX_REMOTE` overrides both.
fn decide_access(root: bool, nix_remote: &str, socket_exists: bool) -> StoreAccess {
    match nix_remote {
        "daemon" | "unix" => StoreAccess::Daemon,
        "" | "local" | "auto" if root => StoreAccess::SingleUser,
        "" | "auto" if socket_exists => StoreAccess::Daemon,
        r if r.starts_with("unix://") => StoreAccess::Daemon,
        _ => StoreAccess::SingleUser,
    }
}

/// The configuration files Nix reads, in order (later ones win).
fn conf_files() -> Vec<PathBuf> {
    let dir = std::env::var_os("NIX_CONF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/nix"));
    vec![dir.join("nix.conf")]
}

/// The `build-users-group` the configuration texts set (last one wins); the built-in default
/// when none does. An empty value means builds run as the calling user.
fn configured_group(texts: &[String]) -> Option<String> {
    let mut group = Some(DEFAULT_BUILD_USERS_GROUP.to_string());
    for text in texts {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            if name.trim() == "build-users-group" {
                let value = value.trim();
                group = (!value.is_empty()).then(|| value.to_string());
            }
        }
    }
    group
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a group of that name exists (`getgrnam`).
pub fn group_exists(name: &str) -> bool {
    let Ok(name) = CString::new(name) else {
        return false;
    };
    // SAFETY: name is a valid C string; the result is only compared with null.
    unsafe { !libc::getgrnam(name.as_ptr()).is_null() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_uses_its_store_directly_unless_told_to_use_the_daemon() {
        assert_eq!(decide_access(true, "", true), StoreAccess::SingleUser);
        assert_eq!(decide_access(true, "daemon", true), StoreAccess::Daemon);
        assert_eq!(decide_access(false, "", true), StoreAccess::Daemon);
        assert_eq!(decide_access(false, "", false), StoreAccess::SingleUser);
    }

    #[test]
    fn the_build_users_group_defaults_to_nixbld_and_can_be_emptied() {
        assert_eq!(configured_group(&[]), Some("nixbld".to_string()));
        let conf = ["sandbox = false\n# build-users-group = x\n".to_string()];
        assert_eq!(configured_group(&conf), Some("nixbld".to_string()));
        let conf = ["build-users-group = builders\n".to_string()];
        assert_eq!(configured_group(&conf), Some("builders".to_string()));
        let conf = [
            "build-users-group = builders\n".to_string(),
            "build-users-group =\n".to_string(),
        ];
        assert_eq!(configured_group(&conf), None);
    }

    #[test]
    fn missing_build_users_on_a_single_user_root_nix_builds_as_root() {
        let nix = LocalNix {
            access: StoreAccess::SingleUser,
            root: true,
            build_users_group: Some("nixbld".into()),
            group_exists: false,
        };
        assert_eq!(
            nix.options(),
            [("build-users-group".to_string(), String::new())]
        );
        let daemon = LocalNix {
            access: StoreAccess::Daemon,
            ..nix.clone()
        };
        assert!(daemon.options().is_empty());
        let present = LocalNix {
            group_exists: true,
            ..nix
        };
        assert!(present.options().is_empty());
    }
}
