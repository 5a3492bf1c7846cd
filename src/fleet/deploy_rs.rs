//! Reading deploy-rs (`deploy.nodes`) and plain `nixosConfigurations` flakes as inventories,
//! field by field: every deploy-rs field is honoured or named in a warning, unknown ones are
//! errors (see docs/migrating-from-deploy-rs.md).

use serde_json::Value;

use super::inventory::{ActivateDefaults, Profile, ProfileKind};
use super::profiles::{check_profile_name, default_profile_path, in_order, SYSTEM_NAME};
use super::schema::{
    host, read_activate, read_system_field, read_toplevel, HostFields, Parsed, Toplevel,
};
use super::value::{as_derivation, problem, Attrs};
use super::{BuildOn, HostName};

/// Settings deploy-rs accepts at every level: `deploy`, a node, a profile.
pub const GENERIC_FIELDS: &[&str] = &[
    "sshUser",
    "user",
    "sshOpts",
    "fastConnection",
    "autoRollback",
    "magicRollback",
    "confirmTimeout",
    "activationTimeout",
    "tempPath",
    "remoteBuild",
    "sudo",
    "interactiveSudo",
];
/// Fields of `deploy` itself, besides the generic ones.
pub const TOP_FIELDS: &[&str] = &["nodes"];
/// Fields of a node, besides the generic ones.
pub const NODE_FIELDS: &[&str] = &["hostname", "profiles", "profilesOrder"];
/// Fields of a profile, besides the generic ones.
pub const PROFILE_FIELDS: &[&str] = &["path", "profilePath"];

/// What `inventory.nix` adds to a node (its nixosConfigurations toplevel, for a node whose
/// system profile has no path).
const NIXOS_FALLBACK: &str = "__nixosToplevel";

/// The command that activates a deploy-rs profile: the wrapper's own script, which needs
/// nothing from deploy-rs (its `activate-rs` is never run).
const WRAPPER_ACTIVATE: &str = "$PROFILE/deploy-rs-activate";

/// One level of deploy-rs settings: `deploy`, a node, or a profile.
#[derive(Default)]
struct Level {
    ssh_user: Option<String>,
    user: Option<String>,
    ssh_opts: Option<Vec<String>>,
    fast_connection: Option<bool>,
    activate: ActivateDefaults,
    temp_path: Option<String>,
    remote_build: Option<bool>,
    sudo: Option<String>,
    interactive_sudo: Option<bool>,
}

impl Level {
    /// Reads the generic settings of `attrs`, rejecting any field outside `generic + own`.
    fn read(attrs: &Attrs, own: &[&str]) -> anyhow::Result<Self> {
        let allowed: Vec<&str> = own.iter().chain(GENERIC_FIELDS).copied().collect();
        let visible: Vec<&str> = allowed.clone();
        let mut with_internal = allowed;
        with_internal.push(NIXOS_FALLBACK);
        attrs.deny_unknown_listing(&with_internal, &visible)?;
        Ok(Level {
            ssh_user: attrs.string("sshUser")?,
            user: attrs.string("user")?,
            ssh_opts: attrs.strings("sshOpts")?,
            fast_connection: attrs.boolean("fastConnection")?,
            activate: read_activate(attrs)?,
            temp_path: attrs.string("tempPath")?,
            remote_build: attrs.boolean("remoteBuild")?,
            sudo: attrs.string("sudo")?,
            interactive_sudo: attrs.boolean("interactiveSudo")?,
        })
    }
}

/// The levels that apply to one profile, innermost first.
struct Chain<'a>(Vec<&'a Level>);

impl Chain<'_> {
    fn pick<T: Clone>(&self, get: impl Fn(&Level) -> Option<T>) -> Option<T> {
        self.0.iter().find_map(|l| get(l))
    }

    fn activate(&self) -> ActivateDefaults {
        self.0
            .iter()
            .fold(ActivateDefaults::default(), |acc, l| acc.over(&l.activate))
    }

    /// `sshOpts` of every level, outermost first: deploy-rs appends them.
    fn ssh_opts(&self) -> Vec<String> {
        self.0
            .iter()
            .rev()
            .flat_map(|l| l.ssh_opts.clone().unwrap_or_default())
            .collect()
    }
}

/// Reads `deploy`: every node becomes a host with its system profile (if it has one) and its
/// other profiles in `profilesOrder`.
pub fn read_deploy(value: &Value) -> anyhow::Result<Parsed> {
    let top_attrs = Attrs::new("deploy", value)?;
    let top = Level::read(&top_attrs, TOP_FIELDS)?;
    let nodes_value = top_attrs
        .get("nodes")
        .ok_or_else(|| problem("deploy", "no nodes: add deploy.nodes.<name> = { ... }"))?;
    let nodes = Attrs::new("deploy.nodes", nodes_value)?;
    let mut warnings = Vec::new();
    warn_level("deploy", &top, &mut warnings);
    let mut hosts = Vec::new();
    for name in nodes.keys() {
        hosts.push(read_node(name, &nodes_value[name], &top, &mut warnings)?);
    }
    let mut parsed = Parsed::hosts(hosts);
    parsed.warnings = warnings;
    Ok(parsed)
}

fn read_node(
    name: &str,
    value: &Value,
    top: &Level,
    warnings: &mut Vec<String>,
) -> anyhow::Result<super::Host> {
    let what = format!("deploy.nodes.{name}");
    let host_name = HostName::parse(name)
        .map_err(|why| problem(&what, format_args!("invalid host name: {why}")))?;
    let node_attrs = Attrs::new(&what, value)?;
    let node = Level::read(&node_attrs, NODE_FIELDS)?;
    warn_level(&what, &node, warnings);
    let profiles_map = node_attrs.object("profiles")?.cloned().unwrap_or_default();

    // The system profile: its own settings, its path (a deploy-rs wrapper is unwrapped).
    let system_what = format!("{what}.profiles.system");
    let system = match profiles_map.get(SYSTEM_NAME) {
        Some(v) => {
            let attrs = Attrs::new(&system_what, v)?;
            let level = Level::read(&attrs, PROFILE_FIELDS)?;
            warn_level(&system_what, &level, warnings);
            Some((level, attrs.get("path"), attrs.string("profilePath")?))
        }
        None => None,
    };
    let empty = Level::default();
    let system_level = system.as_ref().map(|(l, _, _)| l).unwrap_or(&empty);
    let chain = Chain(vec![system_level, &node, top]);
    let login = chain
        .pick(|l| l.ssh_user.clone())
        .or_else(|| chain.pick(|l| l.user.clone()));
    let has_system = system.is_some() || profiles_map.is_empty();
    let toplevel = if has_system {
        let missing = format!(
            "no system profile: set {what}.profiles.system.path or define nixosConfigurations.{name}"
        );
        match system.as_ref().and_then(|(_, path, _)| *path) {
            Some(path) => unwrap_nixos(
                read_system_field(&system_what, "path", Some(path), &missing)?,
                path,
            ),
            None => read_toplevel(&what, node_attrs.get(NIXOS_FALLBACK), &missing)?,
        }
    } else {
        Toplevel {
            drv_path: String::new(),
            out_path: String::new(),
            system: None,
        }
    };
    let system_user = chain
        .pick(|l| l.user.clone())
        .or_else(|| chain.pick(|l| l.ssh_user.clone()))
        .unwrap_or_else(|| "root".to_string());
    if has_system && system_user != "root" {
        warnings.push(format!(
            "{system_what}: user is '{system_user}', but a NixOS system is activated as root; nixdeploy activates it as root"
        ));
    }
    if has_system && chain.activate().auto_rollback == Some(false) {
        warnings.push(format!(
            "{system_what}: autoRollback = false does not apply to the system; nixdeploy always rolls a failed system activation back (other profiles follow it)"
        ));
    }
    let fields = HostFields {
        target_host: node_attrs.string("hostname")?,
        target_user: login.clone(),
        ssh_options: Some(chain.ssh_opts()),
        profile: system.as_ref().and_then(|(_, _, p)| p.clone()),
        activate: chain.activate(),
        substitute: chain.pick(|l| l.fast_connection).map(|fast| !fast),
        ..HostFields::default()
    };
    let build_on = if chain.pick(|l| l.remote_build) == Some(true) {
        BuildOn::Target
    } else {
        BuildOn::Local
    };
    let mut host = host(host_name, fields, toplevel, build_on);
    host.escalation = escalation(login.as_deref(), chain.pick(|l| l.sudo.clone()), "root");
    host.has_system = has_system;

    let mut extra = Vec::new();
    for (profile_name, v) in &profiles_map {
        if profile_name == SYSTEM_NAME {
            continue;
        }
        let pwhat = format!("{what}.profiles.{profile_name}");
        check_profile_name(&pwhat, profile_name)?;
        let attrs = Attrs::new(&pwhat, v)?;
        let level = Level::read(&attrs, PROFILE_FIELDS)?;
        warn_level(&pwhat, &level, warnings);
        if level
            .ssh_user
            .as_ref()
            .is_some_and(|u| Some(u) != login.as_ref())
            || level.ssh_opts.is_some()
        {
            warnings.push(format!(
                "{pwhat}: sshUser/sshOpts of a single profile are not used; nixdeploy reaches {name} over one connection with the node's settings"
            ));
        }
        let chain = Chain(vec![&level, &node, top]);
        let toplevel = read_system_field(
            &pwhat,
            "path",
            attrs.get("path"),
            "no path: set it to the profile's activatable derivation",
        )?;
        let user = chain
            .pick(|l| l.user.clone())
            .or_else(|| chain.pick(|l| l.ssh_user.clone()))
            .unwrap_or_else(|| "root".to_string());
        // The metadata pass leaves the path unevaluated but keeps the derivation's name.
        let name_hint = attrs
            .get("path")
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind =
            if toplevel.out_path.contains("home-manager") || name_hint.contains("home-manager") {
                ProfileKind::HomeManager
            } else {
                ProfileKind::Custom
            };
        extra.push(Profile {
            name: profile_name.clone(),
            kind,
            drv_path: toplevel.drv_path,
            out_path: toplevel.out_path,
            profile_path: attrs
                .string("profilePath")?
                .unwrap_or_else(|| default_profile_path(profile_name, &user)),
            user,
            activate: WRAPPER_ACTIVATE.to_string(),
            defaults: chain.activate(),
        });
    }
    let order = node_attrs.strings("profilesOrder")?;
    let (extra, position) = in_order(&what, extra, has_system, order.as_deref())?;
    host.profiles = extra;
    host.system_position = position;
    Ok(host)
}

/// deploy-rs's `activate.nixos` wraps the toplevel in a buildEnv with its own scripts; the
/// host runs (and `/run/current-system` names) the wrapped toplevel, so that is what nixdeploy
/// deploys and compares. The wrapper's derivation is still what gets built.
fn unwrap_nixos(toplevel: Toplevel, value: &Value) -> Toplevel {
    match value.get("wraps").and_then(Value::as_str) {
        Some(base) if as_derivation(value).is_some() => Toplevel {
            out_path: base.to_string(),
            ..toplevel
        },
        _ => toplevel,
    }
}

/// How root commands are run for a login: deploy-rs's `sudo` (`"doas -u"`) is given the
/// user to become; without it, nixdeploy's default for a non-root login.
fn escalation(
    login: Option<&str>,
    sudo: Option<String>,
    user: &str,
) -> crate::transport::Escalation {
    let configured = sudo.map(|s| {
        let mut argv: Vec<String> = s.split_whitespace().map(str::to_string).collect();
        argv.push(user.to_string());
        argv
    });
    match login {
        Some(l) if l != user => crate::transport::Escalation::for_login(Some(l), configured),
        _ => crate::transport::Escalation::default(),
    }
}

/// Warnings for the settings of one level that nixdeploy does not follow as deploy-rs does.
fn warn_level(what: &str, level: &Level, warnings: &mut Vec<String>) {
    if let Some(path) = &level.temp_path {
        warnings.push(format!(
            "{what}: tempPath '{path}' is not used; nixdeploy keeps its activation state in /run/nixdeploy on the host"
        ));
    }
    if level.interactive_sudo == Some(true) {
        warnings.push(format!(
            "{what}: interactiveSudo is not asked per node; pass --ask-sudo-password to be asked once for the run"
        ));
    }
}

/// Reads `nixosConfigurations` alone: every configuration is a host reached by its name.
pub fn read_nixos(value: &Value) -> anyhow::Result<Parsed> {
    let configs = Attrs::new("nixosConfigurations", value)?;
    let mut hosts = Vec::new();
    for name in configs.keys() {
        let what = format!("nixosConfigurations.{name}");
        let host_name = HostName::parse(name)
            .map_err(|why| problem(&what, format_args!("invalid host name: {why}")))?;
        let entry = Attrs::new(&what, &value[name])?;
        let toplevel = read_toplevel(
            &what,
            entry.get("toplevel"),
            "has no config.system.build.toplevel",
        )?;
        hosts.push(host(
            host_name,
            HostFields::default(),
            toplevel,
            BuildOn::Local,
        ));
    }
    Ok(Parsed::hosts(hosts))
}
