//! The inventory: which hosts exist and how to reach and build them, read from a flake in a
//! cheap metadata pass, with toplevels evaluated only for the hosts a run selects.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::background::{self, Background};
use super::toplevels::{self, EvalOptions, Evaluated};
use super::{colmena, deploy_rs, eval, schema, suggest, HostName, Selector};
use crate::exit::Failure;

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
    /// `targetUser`, the ssh login; `None` lets the ssh config decide.
    pub target_user: Option<String>,
    /// How commands that need root are run when the login is not root (`sudo -H --`).
    pub escalation: crate::transport::Escalation,
    /// `signingKey`: the secret key file that signs closures copied to a login the host's Nix
    /// does not trust.
    pub signing_key: Option<std::path::PathBuf>,
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
    /// The binary cache it substitutes from with `copy(.., #{ via: "cache" })`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<super::BinaryCache>,
    /// Whether the host has a system profile at all (a deploy-rs node may carry only others).
    pub has_system: bool,
    /// Whether its toplevel and profile paths were evaluated (only selected hosts are).
    #[serde(skip)]
    pub evaluation: Evaluation,
    /// The profiles besides the system one, in the order they are deployed.
    pub profiles: Vec<Profile>,
    /// Where the system profile goes in the deploy order: the index in `profiles` it comes
    /// before (`profiles.len()` when it comes last; 0, the default, when first).
    pub system_position: usize,
    /// Settings `activate` uses for this host unless the runbook passes its own.
    pub activate_defaults: ActivateDefaults,
    /// `substituteOnDestination`: whether `copy` lets the host use its own binary caches when
    /// the runbook does not say (`None`: `copy`'s default, yes).
    pub substitute: Option<bool>,
    /// Deployed on this machine without ssh (`local = true`, or colmena's
    /// `allowLocalDeployment` with this machine as the target).
    pub local: bool,
}

impl Host {
    /// Whether the system is a prebuilt store path (no derivation: nothing to build).
    pub fn is_prebuilt(&self) -> bool {
        self.evaluation == Evaluation::Done && self.drv_path.is_empty()
    }

    /// Why no step may work on this host: its toplevel was not evaluated, or failed to.
    pub fn not_evaluated(&self) -> Option<String> {
        match &self.evaluation {
            Evaluation::Done => None,
            Evaluation::Deferred => Some(format!(
                "host {} was not evaluated (internal error: it is selected but its toplevel was never evaluated)",
                self.name
            )),
            Evaluation::Failed(message) => Some(message.clone()),
            Evaluation::Pending(slot) => match slot.get() {
                Some(host) => host.not_evaluated(),
                None => Some(format!(
                    "host {} is still being evaluated (internal error: a step took it before its evaluation was over)",
                    self.name
                )),
            },
        }
    }

    /// This host once its toplevel pass is over: itself when it was evaluated (or failed to
    /// be) before the run, else the evaluated host once the background evaluation delivers it.
    /// Steps that need paths wait here, one host at a time, so a pipeline can start a host's
    /// build and copy while others are still being evaluated.
    pub async fn evaluated(self: &Arc<Self>) -> Arc<Host> {
        match &self.evaluation {
            Evaluation::Pending(slot) => slot.wait().await,
            _ => self.clone(),
        }
    }

    /// This host evaluated (or failed), if its evaluation is over already; `None` while the
    /// background pass is still at it.
    pub fn evaluated_now(self: &Arc<Self>) -> Option<Arc<Host>> {
        match &self.evaluation {
            Evaluation::Pending(slot) => slot.get(),
            _ => Some(self.clone()),
        }
    }

    /// [`Host::evaluated`] for code outside the async runtime (the Rhai engine's thread):
    /// blocks the calling thread until the host's evaluation is over.
    pub fn evaluated_blocking(self: &Arc<Self>) -> Arc<Host> {
        match &self.evaluation {
            Evaluation::Pending(slot) => slot.wait_blocking(),
            _ => self.clone(),
        }
    }

    /// Whether any path of this host is a metadata-pass placeholder: a system without an
    /// output path, or a profile without one (evaluated paths are never empty).
    fn has_deferred_paths(&self) -> bool {
        (self.has_system && self.out_path.is_empty())
            || self.profiles.iter().any(|p| p.out_path.is_empty())
    }
}

/// How far a host's toplevel (and profile paths) have been evaluated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Evaluation {
    /// Evaluated: `drv_path` and `out_path` are real.
    #[default]
    Done,
    /// Only its metadata was read (it is not selected, or not evaluated yet).
    Deferred,
    /// Evaluating it failed with this message (Nix's own, with the host and field).
    Failed(String),
    /// Being evaluated in the background: the evaluated (or failed) host arrives in the slot.
    Pending(Arc<super::pending::Pending>),
}

/// What runs when a profile other than the system one is activated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileKind {
    /// A home-manager generation: `$PROFILE/activate`, as the profile's user.
    HomeManager,
    /// Anything else: its own activation command, as the profile's user.
    Custom,
}

/// A profile besides the system one: a store path set into its own profile link and
/// activated by its own command, as its own user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Profile {
    /// The profile's name (`home`, `myapp`).
    pub name: String,
    /// What kind of profile it is.
    pub kind: ProfileKind,
    /// The `.drv` to build, or empty for a prebuilt store path.
    pub drv_path: String,
    /// The store path the profile link points at after the deploy.
    pub out_path: String,
    /// The profile link (`/nix/var/nix/profiles/per-user/alice/home`).
    pub profile_path: String,
    /// The user the activation command runs as.
    pub user: String,
    /// The shell command that activates it; `$PROFILE` is the profile link.
    pub activate: String,
    /// This profile's own rollback and timeout settings, over the host's.
    pub defaults: ActivateDefaults,
}

/// `activate` settings an inventory may give a host or profile (deploy-rs's `magicRollback`,
/// `autoRollback`, `confirmTimeout`, `activationTimeout`); `None` keeps `activate`'s default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ActivateDefaults {
    /// Roll back unless confirmed over a new connection.
    pub magic_rollback: Option<bool>,
    /// Roll back when activation fails.
    pub auto_rollback: Option<bool>,
    /// Seconds to wait for the confirmation.
    pub confirm_timeout: Option<u64>,
    /// Seconds the activation may take.
    pub activation_timeout: Option<u64>,
}

impl ActivateDefaults {
    /// These settings with `outer` filling the gaps.
    pub fn over(&self, outer: &ActivateDefaults) -> ActivateDefaults {
        ActivateDefaults {
            magic_rollback: self.magic_rollback.or(outer.magic_rollback),
            auto_rollback: self.auto_rollback.or(outer.auto_rollback),
            confirm_timeout: self.confirm_timeout.or(outer.confirm_timeout),
            activation_timeout: self.activation_timeout.or(outer.activation_timeout),
        }
    }
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
    /// `nixOptions`: `--option NAME VALUE` for every local Nix call.
    pub nix_options: Vec<(String, String)>,
    /// The flake's inputs by name (their source directories), for `import "flake:INPUT/MODULE"`.
    pub flake_inputs: std::collections::HashMap<String, PathBuf>,
    /// `allowApplyAll` (native defaults or colmena's `meta`): when `false`, a run must name
    /// its hosts with `--on`.
    pub allow_apply_all: bool,
    /// What the inventory's source asked for that nixdeploy does differently (shown at the
    /// start of a run and by `hosts`).
    pub warnings: Vec<String>,
    /// The metadata pass this inventory was read from, for evaluating toplevels later.
    metadata: Option<Arc<Metadata>>,
}

/// The metadata pass of a flake: what `Inventory::evaluate` needs to evaluate toplevels.
#[derive(Debug)]
pub(super) struct Metadata {
    reference: eval::FlakeRef,
    /// The JSON the metadata pass produced.
    value: serde_json::Value,
}

impl Metadata {
    /// The output the hosts were read from.
    pub(super) fn source(&self) -> String {
        self.value["source"].as_str().unwrap_or("none").to_string()
    }

    /// The toplevel pass over this flake.
    pub(super) fn request<'a>(&'a self, flake: &'a str, source: &'a str) -> toplevels::Request<'a> {
        toplevels::Request {
            flake,
            reference: &self.reference,
            source,
            nar_hash: self.value["narHash"].as_str(),
        }
    }
}

/// The names of the hosts among `hosts` whose toplevels are still to evaluate.
fn deferred(hosts: &[Arc<Host>]) -> Vec<String> {
    hosts
        .iter()
        .filter(|h| h.evaluation == Evaluation::Deferred)
        .map(|h| h.name.to_string())
        .collect()
}

impl Inventory {
    /// Reads the inventory of `flake` (`.`, `./dir`, `/abs/dir` or any flake reference) with
    /// the metadata pass: names, targets, tags and settings of every host, no toplevel
    /// evaluated (see [`Inventory::evaluate`]).
    pub fn load(flake: &str) -> anyhow::Result<Inventory> {
        let reference = eval::resolve(flake)?;
        let value = eval::evaluate(flake, &reference)?;
        let mut inv = Inventory::from_eval(flake, reference.local_dir.as_deref(), &value)?;
        inv.metadata = Some(Arc::new(Metadata { reference, value }));
        if let Some(path) = inv.ssh_config.as_deref().filter(|p| !p.exists()) {
            return Err(Failure::input(format!(
                "nixdeploy: field sshConfig points at {path}, which does not exist; fix the path or remove sshConfig",
                path = path.display()
            ))
            .into());
        }
        Ok(inv)
    }

    /// This inventory with the toplevels (and profile paths) of `hosts` evaluated: from the
    /// evaluation cache, or by several evaluator processes at once. A host whose evaluation
    /// fails is marked [`Evaluation::Failed`] with Nix's message; the others are unaffected.
    /// Hosts already evaluated are left as they are.
    pub fn evaluate(
        &self,
        hosts: &[Arc<Host>],
        options: &EvalOptions,
    ) -> anyhow::Result<(Inventory, Evaluated)> {
        let wanted = deferred(hosts);
        let Some(meta) = self.metadata.clone().filter(|_| !wanted.is_empty()) else {
            return Ok((self.clone(), Evaluated::default()));
        };
        let source = meta.source();
        let request = meta.request(&self.flake, &source);
        let result = toplevels::evaluate(
            &request,
            &wanted,
            options,
            &|_, _| {},
            &AtomicBool::new(false),
        );
        let inv = self.with_entries(&meta, &result.entries, &result.failed)?;
        Ok((inv, result))
    }

    /// Starts evaluating the toplevels of `hosts` in the background and returns at once: an
    /// inventory whose `hosts` are [`Evaluation::Pending`] until their batch is evaluated
    /// (steps wait for each with [`Host::evaluated`]), and the [`Background`] pass, which
    /// reports failures as they happen and its summary at the end.
    pub fn evaluate_in_background(
        &self,
        hosts: &[Arc<Host>],
        options: &EvalOptions,
    ) -> anyhow::Result<(Inventory, Background)> {
        let wanted = deferred(hosts);
        match self.metadata.clone().filter(|_| !wanted.is_empty()) {
            Some(meta) => background::start(self, meta, wanted, options),
            None => Ok((self.clone(), Background::idle())),
        }
    }

    /// This inventory with the toplevel pass's `entries` filled in and the `failed` hosts
    /// marked failed; hosts evaluated before keep their entries.
    pub(super) fn with_entries(
        &self,
        meta: &Metadata,
        entries: &BTreeMap<String, serde_json::Value>,
        failed: &BTreeMap<String, String>,
    ) -> anyhow::Result<Inventory> {
        let source = meta.source();
        let mut value = meta.value.clone();
        if let Some(slots) = toplevels::host_entries(&source, &mut value["value"]) {
            for (host, entry) in entries {
                slots[host.as_str()] = entry.clone();
            }
        }
        let mut inv =
            Inventory::from_eval(&self.flake, meta.reference.local_dir.as_deref(), &value)?;
        inv.ssh_config = self.ssh_config.clone();
        inv.metadata = self.metadata.clone();
        for (name, message) in failed {
            if let Some(host) = inv.hosts.get_mut(&HostName::new(name)) {
                Arc::make_mut(host).evaluation = Evaluation::Failed(message.clone());
            }
        }
        // Hosts evaluated before (or by an earlier call) keep their evaluated entries.
        for (name, host) in &self.hosts {
            if host.evaluation != Evaluation::Deferred {
                inv.hosts.insert(name.clone(), host.clone());
            }
        }
        Ok(inv)
    }

    /// Builds the inventory from the JSON that `nix eval` produced for `flake`; pure, so
    /// every schema rule is testable without nix.
    pub fn from_json(flake: &str, value: serde_json::Value) -> anyhow::Result<Inventory> {
        Inventory::from_eval(flake, eval::local_dir_of(flake).as_deref(), &value)
    }

    fn from_eval(
        flake: &str,
        local_dir: Option<&Path>,
        value: &serde_json::Value,
    ) -> anyhow::Result<Inventory> {
        let source = value["source"].as_str().unwrap_or("none");
        let body = &value["value"];
        let parsed = match source {
            "nixdeploy" => schema::read(body)?,
            "deploy" => deploy_rs::read_deploy(body)?,
            "colmenaHive" => colmena::read_hive(body)?,
            "nixosConfigurations" => deploy_rs::read_nixos(body)?,
            "colmena" => return Err(Failure::input(colmena::raw_hive_error(flake)).into()),
            _ => {
                let outputs: Vec<&str> = body
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                return Err(Failure::input(format!(
                    "flake '{flake}' has no nixdeploy, deploy, colmenaHive or nixosConfigurations output (its outputs: {}); see docs/flake-schema.md",
                    suggest::list(outputs)
                ))
                .into());
            }
        };
        let schema::Parsed {
            hosts: parsed_hosts,
            builders,
            ssh_config,
            nix_options,
            allow_apply_all,
            warnings,
        } = parsed;
        if parsed_hosts.is_empty() {
            return Err(Failure::input(format!(
                "flake '{flake}' defines no hosts in its {source} output; add at least one host"
            ))
            .into());
        }
        let base = local_dir
            .map(Path::to_path_buf)
            .or_else(|| value["root"].as_str().map(PathBuf::from));
        let ssh_config = ssh_config
            .map(|written| schema::ssh_config_path(&written, base.as_deref()))
            .transpose()?;
        Ok(Inventory {
            flake: flake.to_string(),
            ssh_config,
            hosts: index_hosts(parsed_hosts)?,
            builders,
            nix_options,
            flake_inputs: value["inputs"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|p| (k.clone(), PathBuf::from(p))))
                        .collect()
                })
                .unwrap_or_default(),
            allow_apply_all,
            warnings,
            metadata: None,
        })
    }

    /// The git commit the flake was read at, when it is a clean git flake (the metadata
    /// pass's `rev`).
    pub fn flake_revision(&self) -> Option<String> {
        let meta = self.metadata.as_ref()?;
        meta.value["rev"].as_str().map(str::to_string)
    }

    /// The host with this exact name.
    pub fn get(&self, name: &str) -> Option<&Arc<Host>> {
        self.hosts.get(&HostName::new(name))
    }

    /// The host with this name, or an input error that suggests the closest known names
    /// (`unknown host 'web-9' (did you mean 'web-1'?); known hosts: web-1, web-2`).
    pub fn require(&self, name: &str) -> anyhow::Result<&Arc<Host>> {
        self.get(name)
            .ok_or_else(|| Failure::input(self.unknown_host(name)).into())
    }

    /// The message for a host name that is not in the inventory.
    pub fn unknown_host(&self, name: &str) -> String {
        suggest::unknown("host", name, self.hosts.keys().map(|n| n.as_str()))
    }

    /// Every tag of every host, sorted and without repeats.
    pub fn tags(&self) -> Vec<String> {
        let tags: BTreeSet<&String> = self.hosts.values().flat_map(|h| &h.tags).collect();
        tags.into_iter().cloned().collect()
    }

    /// The hosts a `--on` selector picks, in inventory order; `None` picks every host.
    pub fn select(&self, on: Option<&str>) -> anyhow::Result<Vec<Arc<Host>>> {
        match on {
            None => Ok(self.hosts.values().cloned().collect()),
            Some(text) => Selector::parse(text)
                .map_err(|err| Failure::input(err.to_string()))?
                .select(self),
        }
    }
}

/// Hosts by name; names that differ only in case are rejected, since ssh and DNS would
/// not tell them apart.
fn index_hosts(hosts: Vec<Host>) -> anyhow::Result<BTreeMap<HostName, Arc<Host>>> {
    let mut folded: BTreeMap<String, HostName> = BTreeMap::new();
    let mut index = BTreeMap::new();
    for host in hosts {
        if let Some(other) =
            folded.insert(host.name.as_str().to_ascii_lowercase(), host.name.clone())
        {
            return Err(Failure::input(format!(
                "hosts '{other}' and '{name}' differ only in case; host names are case-insensitive, rename one",
                name = host.name
            ))
            .into());
        }
        let mut host = host;
        if host.has_deferred_paths() {
            host.evaluation = Evaluation::Deferred;
        }
        index.insert(host.name.clone(), Arc::new(host));
    }
    Ok(index)
}

#[cfg(test)]
#[path = "inventory_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "migration_tests.rs"]
mod migration_tests;
