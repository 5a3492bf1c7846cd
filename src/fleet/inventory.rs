//! The inventory: which hosts exist and how to reach and build them, read from a flake in one `nix eval`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::HostName;

/// Where a host's system is built.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildOn {
    /// On the deploying machine (Nix may still use its own `builders`).
    Local,
    /// On the target itself: the derivation closure is copied there and realised.
    Target,
    /// On the named inventory builder.
    Builder(String),
}

/// A remote build machine from `nixdeploy.builders`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Builder {
    /// Its name in the inventory.
    pub name: String,
    /// The ssh destination (an ssh config alias works).
    pub host: String,
    /// The Nix system types it builds for.
    pub systems: Vec<String>,
    /// Parallel build jobs it accepts.
    pub max_jobs: u32,
    /// Relative speed; higher is preferred.
    pub speed_factor: u32,
    /// Nix features it supports (`kvm`, `big-parallel`, ...).
    pub supported_features: Vec<String>,
}

/// One deploy target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Host {
    /// The inventory name.
    pub name: HostName,
    /// The ssh destination; defaults to the name so ssh config aliases work.
    pub target_host: String,
    /// `targetUser`; `None` lets the ssh config decide.
    pub target_user: Option<String>,
    /// `targetPort`; `None` lets the ssh config decide.
    pub target_port: Option<u16>,
    /// Tags, selected with `@tag`.
    pub tags: Vec<String>,
    /// The Nix system type of the host (`x86_64-linux`).
    pub system: String,
    /// The `.drv` of the host's system (instantiated, never built, by evaluation).
    pub drv_path: String,
    /// The output path that building `drv_path` produces.
    pub out_path: String,
    /// The profile that activation sets (`/nix/var/nix/profiles/system`).
    pub profile: String,
    /// Where the system is built.
    pub build_on: BuildOn,
    /// Extra ssh arguments for this host.
    pub ssh_options: Vec<String>,
    /// Secrets declared in the inventory (`keys.<name> = { ... }`), as evaluated JSON.
    pub keys: BTreeMap<String, serde_json::Value>,
}

/// The whole inventory of one flake.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// The flake reference as the user gave it.
    pub flake: String,
    /// `sshConfig`, passed to ssh as `-F`; `None` uses the user's own ssh configuration.
    pub ssh_config: Option<PathBuf>,
    /// Hosts by name.
    pub hosts: BTreeMap<HostName, Arc<Host>>,
    /// Remote builders by name.
    pub builders: BTreeMap<String, Builder>,
}
