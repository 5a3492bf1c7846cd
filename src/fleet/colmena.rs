//! Reading a colmena hive (`colmenaHive`, the `colmena.lib.makeHive` result) as an inventory:
//! every `deployment.*` field is honoured or named in a warning (see
//! docs/migrating-from-colmena.md).

use serde_json::{Map, Value};

use super::name::check_tag;
use super::schema::{host, is_this_machine, read_toplevel, HostFields, Parsed};
use super::value::{problem, Attrs};
use super::{BuildOn, HostName};

/// The target of a host that has no ssh target (colmena's `targetHost = null`).
pub const LOCAL_ONLY: &str = "localhost";

/// The `deployment` fields nixdeploy reads.
pub const DEPLOYMENT_FIELDS: &[&str] = &[
    "targetHost",
    "targetPort",
    "targetUser",
    "tags",
    "keys",
    "buildOnTarget",
    "substituteOnDestination",
    "allowLocalDeployment",
    "privilegeEscalationCommand",
    "sshOptions",
    "replaceUnknownProfiles",
];

/// The `meta` fields nixdeploy reads (the others only shape evaluation, which makeHive did).
pub const META_FIELDS: &[&str] = &["allowApplyAll", "machinesFile", "name", "description"];

/// The message for a flake that only has colmena's raw hive.
pub fn raw_hive_error(flake: &str) -> String {
    format!(
        "flake '{flake}' has a `colmena` output (a raw hive) but no `colmenaHive`; nixdeploy reads the evaluated hive, \
as colmena itself does since 0.5: add `colmenaHive = colmena.lib.makeHive self.colmena;` to the flake's outputs \
(with colmena as an input: `inputs.colmena.url = \"github:zhaofengli/colmena\";`)"
    )
}

/// Reads the hive that `inventory.nix` extracted: `{ nodes.<n> = { deployment, toplevel }; meta }`.
pub fn read_hive(value: &Value) -> anyhow::Result<Parsed> {
    let hive = Attrs::new("colmenaHive", value)?;
    let nodes_value = hive.get("nodes").ok_or_else(|| {
        problem(
            "colmenaHive",
            "has no nodes; it should be the result of colmena.lib.makeHive",
        )
    })?;
    let nodes = Attrs::new("colmenaHive.nodes", nodes_value)?;
    let mut warnings = Vec::new();
    let mut allow_apply_all = true;
    if let Some(meta) = hive.get("meta") {
        let meta = Attrs::new("colmenaHive.meta", meta)?;
        meta.deny_unknown(META_FIELDS)?;
        allow_apply_all = meta.boolean("allowApplyAll")?.unwrap_or(true);
        if let Some(file) = meta.string("machinesFile")? {
            warnings.push(format!(
                "colmenaHive.meta.machinesFile '{file}' is not used; declare build machines in nixdeploy.builders or in nix.conf `builders`"
            ));
        }
    }
    let this_machine = this_hostname();
    let mut hosts = Vec::new();
    for name in nodes.keys() {
        let what = format!("colmenaHive.nodes.{name}");
        let host_name = HostName::parse(name)
            .map_err(|why| problem(&what, format_args!("invalid host name: {why}")))?;
        let node = Attrs::new(&what, &nodes_value[name])?;
        let dwhat = format!("{what}.config.deployment");
        let empty = Value::Object(Map::new());
        let deployment = Attrs::new(&dwhat, node.get("deployment").unwrap_or(&empty))?;
        for key in deployment.keys() {
            if !DEPLOYMENT_FIELDS.contains(&key.as_str()) {
                warnings.push(format!(
                    "{dwhat}.{key} is not a field nixdeploy knows; it is ignored"
                ));
            }
        }
        let toplevel = read_toplevel(
            &what,
            node.get("toplevel"),
            "has no config.system.build.toplevel",
        )?;
        // makeHive fills in the node name; only an explicit null means "no ssh target".
        let no_target =
            deployment.keys().any(|k| k == "targetHost") && !deployment.has("targetHost");
        let target_host = match deployment.string("targetHost")? {
            Some(t) => Some(t),
            None if no_target => None,
            None => Some(name.clone()),
        };
        let allow_local = deployment.boolean("allowLocalDeployment")?.unwrap_or(false);
        // colmena's apply-local: a node allowed to deploy locally whose target is this
        // machine (or that has none) is deployed here, without ssh.
        let local = allow_local
            && target_host
                .as_deref()
                .is_none_or(|t| is_this_machine(t) || this_machine.as_deref() == Some(t));
        if target_host.is_none() && !allow_local {
            return Err(problem(
                &dwhat,
                "targetHost is null and allowLocalDeployment is false, so the node cannot be reached; set one of them",
            ));
        }
        let tags = deployment.strings("tags")?;
        for tag in tags.iter().flatten() {
            check_tag(tag).map_err(|why| deployment.field_problem("tags", why))?;
        }
        let user = deployment.string("targetUser")?;
        let fields = HostFields {
            target_host: target_host.or_else(|| Some(LOCAL_ONLY.to_string())),
            target_user: user.clone(),
            target_port: deployment
                .integer("targetPort", 1, u16::MAX.into())?
                .map(|p| p as u16),
            tags,
            ssh_options: deployment.strings("sshOptions")?,
            keys: read_keys(&deployment, &mut warnings)?,
            local: Some(local),
            substitute: Some(
                deployment
                    .boolean("substituteOnDestination")?
                    .unwrap_or(false),
            ),
            ..HostFields::default()
        };
        let build_on = if deployment.boolean("buildOnTarget")? == Some(true) {
            BuildOn::Target
        } else {
            BuildOn::Local
        };
        let escalate = deployment.strings("privilegeEscalationCommand")?;
        if deployment.boolean("replaceUnknownProfiles")? == Some(false) {
            warnings.push(format!(
                "{dwhat}.replaceUnknownProfiles = false is not checked; nixdeploy sets the profile whatever it points at, and `diff` shows what a host runs before you deploy"
            ));
        }
        let mut host = host(host_name, fields, toplevel, build_on);
        host.local = local;
        // colmena only escalates for a login that is not root.
        let configured = escalate.filter(|_| user.as_deref().is_some_and(|u| u != "root"));
        host.escalation = crate::transport::Escalation::for_login(user.as_deref(), configured);
        hosts.push(host);
    }
    let mut parsed = Parsed::hosts(hosts);
    parsed.allow_apply_all = allow_apply_all;
    parsed.warnings = warnings;
    Ok(parsed)
}

/// colmena's keys as the keys module reads them: unset (`null`) sources dropped, and the
/// internal `path` (always `destDir/name`) left out.
fn read_keys(
    deployment: &Attrs,
    warnings: &mut Vec<String>,
) -> anyhow::Result<std::collections::BTreeMap<String, Value>> {
    let mut keys = std::collections::BTreeMap::new();
    for (name, spec) in deployment.object("keys")?.into_iter().flatten() {
        let Some(map) = spec.as_object() else {
            keys.insert(name.clone(), spec.clone());
            continue;
        };
        let mut clean: Map<String, Value> = map
            .iter()
            .filter(|(k, v)| !v.is_null() && k.as_str() != "path")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let dest = clean
            .get("destDir")
            .and_then(Value::as_str)
            .unwrap_or("/run/keys");
        let file = clean.get("name").and_then(Value::as_str).unwrap_or(name);
        if let Some(path) = map.get("path").and_then(Value::as_str) {
            if path != format!("{dest}/{file}") {
                warnings.push(format!(
                    "{}.keys.{name}.path '{path}' is not destDir/name; nixdeploy writes the key to {dest}/{file}",
                    deployment.what()
                ));
            }
        }
        clean
            .entry("name")
            .or_insert_with(|| Value::String(name.clone()));
        keys.insert(name.clone(), Value::Object(clean));
    }
    Ok(keys)
}

/// This machine's host name, to recognise a colmena node that targets it.
fn this_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
