//! The `nixdeploy` flake output (see `docs/flake-schema.md`): hosts, defaults and builders.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::name::{check_name, check_tag};
use super::value::{as_derivation, describe, problem, Attrs};
use super::{suggest, BuildOn, Builder, Host, HostName};

/// The profile a host's system is installed into unless `profile` says otherwise.
pub const SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";

/// The system type assumed when neither the host nor its toplevel says.
const DEFAULT_SYSTEM: &str = "x86_64-linux";

const TOP_FIELDS: &[&str] = &["defaults", "sshConfig", "nixOptions", "hosts", "builders"];
const HOST_FIELDS: &[&str] = &[
    "targetHost",
    "targetUser",
    "targetPort",
    "tags",
    "system",
    "toplevel",
    "buildOn",
    "sshOptions",
    "profile",
    "keys",
    "privilegeEscalation",
    "signingKey",
];
const NOT_DEFAULTS: &[&str] = &["targetHost", "toplevel"];
const BUILDER_FIELDS: &[&str] = &[
    "host",
    "systems",
    "maxJobs",
    "speedFactor",
    "supportedFeatures",
];

/// What the `nixdeploy` output yields, before it becomes an `Inventory`.
pub struct Parsed {
    /// `sshConfig` as written (resolved against the flake directory by the caller).
    pub ssh_config: Option<String>,
    /// `nixOptions`: `--option NAME VALUE` pairs for every local Nix call.
    pub nix_options: Vec<(String, String)>,
    /// The hosts, in name order.
    pub hosts: Vec<Host>,
    /// The builders by name.
    pub builders: BTreeMap<String, Builder>,
}

/// The host fields as written, each optional, so defaults can fill the gaps.
#[derive(Default, Clone)]
pub struct HostFields {
    /// `targetHost`.
    pub target_host: Option<String>,
    /// `targetUser`.
    pub target_user: Option<String>,
    /// `targetPort`.
    pub target_port: Option<u16>,
    /// `tags`.
    pub tags: Option<Vec<String>>,
    /// `system`.
    pub system: Option<String>,
    /// `buildOn`, not yet resolved against the builders.
    pub build_on: Option<String>,
    /// `sshOptions`.
    pub ssh_options: Option<Vec<String>>,
    /// `profile`.
    pub profile: Option<String>,
    /// `keys`, merged by key name with the defaults.
    pub keys: BTreeMap<String, Value>,
    /// `privilegeEscalation`: the argv that runs a command as root; `[ ]` for none.
    pub privilege_escalation: Option<Vec<String>>,
    /// `signingKey`: a secret key file on the deployer that signs what is copied.
    pub signing_key: Option<String>,
}

impl HostFields {
    /// Reads and type-checks every field except `toplevel`; errors name the set `attrs` is.
    pub fn read(attrs: &Attrs) -> anyhow::Result<Self> {
        let tags = attrs.strings("tags")?;
        for tag in tags.iter().flatten() {
            check_tag(tag).map_err(|why| attrs.field_problem("tags", why))?;
        }
        let profile = attrs.string("profile")?;
        if let Some(p) = profile.as_deref().filter(|p| !p.starts_with('/')) {
            return Err(attrs.field_problem(
                "profile",
                format_args!("must be an absolute path, found '{p}'"),
            ));
        }
        let target_host = attrs.string("targetHost")?;
        if target_host.as_deref() == Some("") {
            return Err(attrs.field_problem("targetHost", "must not be empty"));
        }
        let privilege_escalation = attrs.strings("privilegeEscalation")?;
        if let Some(argv) = &privilege_escalation {
            if argv.iter().any(|a| a.is_empty()) {
                return Err(attrs.field_problem(
                    "privilegeEscalation",
                    "must not contain empty strings; write the tool and its options, e.g. [ \"sudo\" \"-H\" \"--\" ], or [ ] for none",
                ));
            }
        }
        let signing_key = attrs.string("signingKey")?;
        if let Some(k) = signing_key.as_deref().filter(|k| !k.starts_with('/')) {
            return Err(attrs.field_problem(
                "signingKey",
                format_args!(
                    "must be the absolute path of a secret key file on the deploying machine (made with `nix key generate-secret`), found '{k}'"
                ),
            ));
        }
        Ok(HostFields {
            privilege_escalation,
            signing_key,
            target_host,
            target_user: attrs.string("targetUser")?,
            target_port: attrs
                .integer("targetPort", 1, u16::MAX.into())?
                .map(|p| p as u16),
            tags,
            system: attrs.string("system")?,
            build_on: attrs.string("buildOn")?,
            ssh_options: attrs.strings("sshOptions")?,
            profile,
            keys: attrs
                .object("keys")?
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        })
    }

    /// These fields with `defaults` under them: a host's value replaces the default,
    /// except `keys`, which are merged by name.
    pub fn over(self, defaults: &HostFields) -> HostFields {
        let mut keys = defaults.keys.clone();
        keys.extend(self.keys);
        HostFields {
            target_host: self.target_host.or_else(|| defaults.target_host.clone()),
            target_user: self.target_user.or_else(|| defaults.target_user.clone()),
            target_port: self.target_port.or(defaults.target_port),
            tags: self.tags.or_else(|| defaults.tags.clone()),
            system: self.system.or_else(|| defaults.system.clone()),
            build_on: self.build_on.or_else(|| defaults.build_on.clone()),
            ssh_options: self.ssh_options.or_else(|| defaults.ssh_options.clone()),
            profile: self.profile.or_else(|| defaults.profile.clone()),
            keys,
            privilege_escalation: self
                .privilege_escalation
                .or_else(|| defaults.privilege_escalation.clone()),
            signing_key: self.signing_key.or_else(|| defaults.signing_key.clone()),
        }
    }
}

/// A toplevel derivation: the `.drv`, its output and the system it declares.
pub struct Toplevel {
    /// The `.drv` path.
    pub drv_path: String,
    /// The output path.
    pub out_path: String,
    /// The derivation's `system`, if it has one.
    pub system: Option<String>,
}

/// Reads a `toplevel` value; `missing` is the message for a host that has none.
pub fn read_toplevel(what: &str, value: Option<&Value>, missing: &str) -> anyhow::Result<Toplevel> {
    match value.filter(|v| !v.is_null()) {
        None => Err(problem(what, missing)),
        Some(v) => match as_derivation(v) {
            Some((drv_path, out_path, system)) => Ok(Toplevel {
                drv_path,
                out_path,
                system,
            }),
            None => Err(problem(
                what,
                format_args!(
                    "field toplevel must be a derivation (such as config.system.build.toplevel), found {}",
                    describe(v)
                ),
            )),
        },
    }
}

/// Builds a `Host` from merged fields and its toplevel; `build_on` is resolved by the caller.
pub fn host(name: HostName, fields: HostFields, toplevel: Toplevel, build_on: BuildOn) -> Host {
    Host {
        target_host: fields.target_host.unwrap_or_else(|| name.to_string()),
        escalation: crate::transport::Escalation::for_login(
            fields.target_user.as_deref(),
            fields.privilege_escalation,
        ),
        signing_key: fields.signing_key.map(PathBuf::from),
        target_user: fields.target_user,
        target_port: fields.target_port,
        tags: fields.tags.unwrap_or_default(),
        system: fields
            .system
            .or(toplevel.system)
            .unwrap_or_else(|| DEFAULT_SYSTEM.to_string()),
        drv_path: toplevel.drv_path,
        out_path: toplevel.out_path,
        profile: fields.profile.unwrap_or_else(|| SYSTEM_PROFILE.to_string()),
        build_on,
        ssh_options: fields.ssh_options.unwrap_or_default(),
        keys: fields.keys,
        name,
    }
}

/// Reads the `nixdeploy` output.
pub fn read(value: &Value) -> anyhow::Result<Parsed> {
    let top = Attrs::new("nixdeploy", value)?;
    top.deny_unknown(TOP_FIELDS)?;
    let builders = read_builders(&top)?;
    let defaults = match top.get("defaults") {
        None => HostFields::default(),
        Some(v) => {
            let attrs = Attrs::new("nixdeploy.defaults", v)?;
            attrs.deny_unknown(HOST_FIELDS)?;
            if let Some(key) = NOT_DEFAULTS.iter().find(|k| attrs.has(k)) {
                return Err(attrs.field_problem(
                    key,
                    "cannot be a default; set it on each host in nixdeploy.hosts",
                ));
            }
            HostFields::read(&attrs)?
        }
    };
    let hosts_value = top.get("hosts").ok_or_else(|| {
        problem(
            "nixdeploy",
            "no hosts: add nixdeploy.hosts.<name> = { ... } (see docs/flake-schema.md)",
        )
    })?;
    let hosts_attrs = Attrs::new("nixdeploy.hosts", hosts_value)?;
    let mut hosts = Vec::new();
    for name in hosts_attrs.keys() {
        let what = format!("host {name}");
        let host_name = HostName::parse(name)
            .map_err(|why| problem(&what, format_args!("invalid host name: {why}")))?;
        let attrs = Attrs::new(&what, &hosts_value[name])?;
        attrs.deny_unknown(HOST_FIELDS)?;
        let fields = HostFields::read(&attrs)?.over(&defaults);
        let missing = format!(
            "no toplevel: set nixdeploy.hosts.{name}.toplevel or define nixosConfigurations.{name}"
        );
        let toplevel = read_toplevel(&what, attrs.get("toplevel"), &missing)?;
        let build_on = resolve_build_on(&what, fields.build_on.as_deref(), &builders)?;
        hosts.push(host(host_name, fields, toplevel, build_on));
    }
    let mut nix_options = Vec::new();
    if let Some(v) = top.get("nixOptions") {
        let Some(map) = v.as_object() else {
            return Err(top.field_problem(
                "nixOptions",
                "must be an attribute set of option names to values",
            ));
        };
        for (name, value) in map {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Array(items) if items.iter().all(|i| i.is_string()) => items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                other => {
                    return Err(top.field_problem(
                        "nixOptions",
                        format!(
                        "option {name} must be a string, number, bool or list of strings, found {}",
                        describe(other)
                    ),
                    ))
                }
            };
            nix_options.push((name.clone(), text));
        }
    }
    Ok(Parsed {
        nix_options,
        ssh_config: top.string("sshConfig")?,
        hosts,
        builders,
    })
}

/// `local`, `target` or the name of a builder.
pub fn resolve_build_on(
    what: &str,
    build_on: Option<&str>,
    builders: &BTreeMap<String, Builder>,
) -> anyhow::Result<BuildOn> {
    match build_on {
        None | Some("local") => Ok(BuildOn::Local),
        Some("target") => Ok(BuildOn::Target),
        Some(name) if builders.contains_key(name) => Ok(BuildOn::Builder(name.to_string())),
        Some(name) => {
            let known = builders.keys().map(String::as_str);
            let mut message = format!("field buildOn names unknown builder '{name}'");
            if let Some(near) = suggest::did_you_mean(name, known.clone()) {
                message.push_str(&format!(" (did you mean '{near}'?)"));
            }
            message.push_str(&format!(
                "; use \"local\", \"target\" or a builder from nixdeploy.builders (known builders: {})",
                suggest::list(known)
            ));
            Err(problem(what, message))
        }
    }
}

fn read_builders(top: &Attrs) -> anyhow::Result<BTreeMap<String, Builder>> {
    let mut builders = BTreeMap::new();
    let Some(map) = top.object("builders")? else {
        return Ok(builders);
    };
    for (name, value) in map {
        let what = format!("builder {name}");
        check_name(name).map_err(|why| problem(&what, format_args!("invalid name: {why}")))?;
        if name == "local" || name == "target" {
            return Err(problem(
                &what,
                "the names 'local' and 'target' are reserved for buildOn; rename the builder",
            ));
        }
        let attrs = Attrs::new(&what, value)?;
        attrs.deny_unknown(BUILDER_FIELDS)?;
        let host = attrs
            .string("host")?
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                attrs.field_problem("host", "is missing: set the ssh destination of the builder")
            })?;
        let systems = attrs
            .strings("systems")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                attrs.field_problem(
                    "systems",
                    "is missing: list the system types it builds, e.g. [ \"aarch64-linux\" ]",
                )
            })?;
        builders.insert(
            name.clone(),
            Builder {
                name: name.clone(),
                host,
                systems,
                max_jobs: attrs.integer("maxJobs", 0, u32::MAX.into())?.unwrap_or(1) as u32,
                speed_factor: attrs
                    .integer("speedFactor", 0, u32::MAX.into())?
                    .unwrap_or(1) as u32,
                supported_features: attrs.strings("supportedFeatures")?.unwrap_or_default(),
            },
        );
    }
    Ok(builders)
}

/// Resolves `sshConfig` against the flake directory (or the flake's store copy).
pub fn ssh_config_path(written: &str, base: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(written);
    if path.is_absolute() {
        return Ok(path);
    }
    match base {
        Some(base) => Ok(base.join(path)),
        None => Err(problem(
            "nixdeploy",
            format_args!(
                "field sshConfig is the relative path '{written}' but the flake has no local directory; use an absolute path"
            ),
        )),
    }
}
