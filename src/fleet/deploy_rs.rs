//! Reading deploy-rs (`deploy.nodes`) and plain `nixosConfigurations` flakes as inventories.

use serde_json::Value;

use super::schema::{host, read_toplevel, HostFields};
use super::value::{problem, Attrs};
use super::{BuildOn, Host, HostName};

/// One level of deploy-rs settings: the top-level `deploy`, a node, or its system profile.
struct Level {
    ssh_user: Option<String>,
    user: Option<String>,
    ssh_opts: Option<Vec<String>>,
    profile_path: Option<String>,
    remote_build: Option<bool>,
}

impl Level {
    fn read(attrs: &Attrs) -> anyhow::Result<Self> {
        Ok(Level {
            ssh_user: attrs.string("sshUser")?,
            user: attrs.string("user")?,
            ssh_opts: attrs.strings("sshOpts")?,
            profile_path: attrs.string("profilePath")?,
            remote_build: attrs.boolean("remoteBuild")?,
        })
    }
}

/// Reads `deploy`: the system profile of every node becomes a host. The innermost setting
/// wins (profile, then node, then `deploy`); `sshUser` falls back to `user`, since nixdeploy
/// connects as the user that activates.
pub fn read_deploy(value: &Value) -> anyhow::Result<Vec<Host>> {
    let top_attrs = Attrs::new("deploy", value)?;
    let top = Level::read(&top_attrs)?;
    let nodes_value = top_attrs
        .get("nodes")
        .ok_or_else(|| problem("deploy", "no nodes: add deploy.nodes.<name> = { ... }"))?;
    let nodes = Attrs::new("deploy.nodes", nodes_value)?;
    let mut hosts = Vec::new();
    for name in nodes.keys() {
        let what = format!("deploy.nodes.{name}");
        let host_name = HostName::parse(name)
            .map_err(|why| problem(&what, format_args!("invalid host name: {why}")))?;
        let node_attrs = Attrs::new(&what, &nodes_value[name])?;
        let node = Level::read(&node_attrs)?;
        let system_value = node_attrs
            .object("profiles")?
            .and_then(|profiles| profiles.get("system"));
        let profile_what = format!("{what}.profiles.system");
        let (profile, path) = match system_value {
            Some(v) => {
                let attrs = Attrs::new(&profile_what, v)?;
                (Some(Level::read(&attrs)?), attrs.get("path"))
            }
            None => (None, None),
        };
        let fallback = node_attrs.get("__nixosToplevel");
        let missing = format!(
            "no system profile: set {what}.profiles.system.path or define nixosConfigurations.{name}"
        );
        let toplevel = match path {
            Some(path) => read_toplevel(&profile_what, Some(path), &missing)?,
            None => read_toplevel(&what, fallback, &missing)?,
        };
        let levels = [profile.as_ref(), Some(&node), Some(&top)];
        let pick =
            |get: &dyn Fn(&Level) -> Option<String>| levels.iter().flatten().find_map(|l| get(l));
        let fields = HostFields {
            target_host: node_attrs.string("hostname")?,
            target_user: pick(&|l| l.ssh_user.clone()).or_else(|| pick(&|l| l.user.clone())),
            ssh_options: levels.iter().flatten().find_map(|l| l.ssh_opts.clone()),
            profile: pick(&|l| l.profile_path.clone()),
            ..HostFields::default()
        };
        let remote_build = levels.iter().flatten().find_map(|l| l.remote_build);
        let build_on = if remote_build == Some(true) {
            BuildOn::Target
        } else {
            BuildOn::Local
        };
        hosts.push(host(host_name, fields, toplevel, build_on));
    }
    Ok(hosts)
}

/// Reads `nixosConfigurations` alone: every configuration is a host reached by its name.
pub fn read_nixos(value: &Value) -> anyhow::Result<Vec<Host>> {
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
    Ok(hosts)
}
