//! The `nixdeploy` flake output (see `docs/flake-schema.md`): hosts, defaults and builders.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::inventory::ActivateDefaults;
use super::inventory::Evaluation;
use super::name::{check_name, check_tag};
use super::value::{as_derivation, describe, problem, Attrs};
use super::{profiles, suggest, BuildOn, Builder, Host, HostName};

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
    "cache",
    "profiles",
    "profilesOrder",
    "local",
    "activate",
    "substituteOnDestination",
    "allowApplyAll",
    "privilegeEscalation",
    "signingKey",
];
const NOT_DEFAULTS: &[&str] = &["targetHost", "toplevel", "profiles", "profilesOrder"];
/// Fields only `defaults` may set: they are about the whole fleet.
const ONLY_DEFAULTS: &[&str] = &["allowApplyAll"];
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
    /// `allowApplyAll` (default `true`).
    pub allow_apply_all: bool,
    /// What the source asked for that nixdeploy does differently.
    pub warnings: Vec<String>,
}

impl Parsed {
    /// An inventory of just these hosts (deploy-rs, plain nixosConfigurations).
    pub fn hosts(hosts: Vec<Host>) -> Parsed {
        Parsed {
            ssh_config: None,
            nix_options: Vec::new(),
            hosts,
            builders: BTreeMap::new(),
            allow_apply_all: true,
            warnings: Vec::new(),
        }
    }
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
    /// `cache`, the binary cache this host substitutes from.
    pub cache: Option<super::cache::BinaryCache>,
    /// `local`.
    pub local: Option<bool>,
    /// `activate`: rollback and timeout defaults for `activate`.
    pub activate: ActivateDefaults,
    /// `substituteOnDestination`.
    pub substitute: Option<bool>,
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
            cache: attrs
                .get("cache")
                .map(|v| super::cache::BinaryCache::read(attrs.what(), v))
                .transpose()?,
            local: attrs.boolean("local")?,
            activate: match attrs.get("activate") {
                None => ActivateDefaults::default(),
                Some(v) => {
                    let what = format!("{}, field activate", attrs.what());
                    let a = Attrs::new(&what, v)?;
                    a.deny_unknown(ACTIVATE_FIELDS)?;
                    read_activate(&a)?
                }
            },
            substitute: attrs.boolean("substituteOnDestination")?,
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
            cache: self.cache.or_else(|| defaults.cache.clone()),
            local: self.local.or(defaults.local),
            activate: self.activate.over(&defaults.activate),
            substitute: self.substitute.or(defaults.substitute),
            privilege_escalation: self
                .privilege_escalation
                .or_else(|| defaults.privilege_escalation.clone()),
            signing_key: self.signing_key.or_else(|| defaults.signing_key.clone()),
        }
    }
}

/// The fields of a native `activate = { ... }` set (also a profile's own).
pub const ACTIVATE_FIELDS: &[&str] = &[
    "magicRollback",
    "autoRollback",
    "confirmTimeout",
    "activationTimeout",
];

/// Reads rollback and timeout settings named as deploy-rs names them.
pub fn read_activate(attrs: &Attrs) -> anyhow::Result<ActivateDefaults> {
    Ok(ActivateDefaults {
        magic_rollback: attrs.boolean("magicRollback")?,
        auto_rollback: attrs.boolean("autoRollback")?,
        confirm_timeout: attrs.integer("confirmTimeout", 1, 86_400)?,
        activation_timeout: attrs.integer("activationTimeout", 1, 86_400)?,
    })
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
    read_system_field(what, "toplevel", value, missing)
}

/// Reads a system-like field named `field` (`toplevel`, a profile's `path`): a derivation, or a
/// prebuilt store path string. A `deferred` marker (the metadata pass did not evaluate it)
/// reads as empty paths.
pub fn read_system_field(
    what: &str,
    field: &str,
    value: Option<&Value>,
    missing: &str,
) -> anyhow::Result<Toplevel> {
    match value.filter(|v| !v.is_null()) {
        None => Err(problem(what, missing)),
        Some(v) if is_deferred(v) => Ok(Toplevel {
            drv_path: String::new(),
            out_path: String::new(),
            system: v.get("system").and_then(Value::as_str).map(str::to_string),
        }),
        Some(Value::String(path)) => prebuilt(what, field, path),
        Some(v) => match as_derivation(v) {
            Some((drv_path, out_path, system)) => Ok(Toplevel {
                drv_path,
                out_path,
                system,
            }),
            None => Err(problem(
                what,
                format_args!(
                    "field {field} must be a derivation (such as config.system.build.toplevel) or a store path, found {}",
                    describe(v)
                ),
            )),
        },
    }
}

/// Whether a value is the metadata pass's marker for a toplevel it did not evaluate.
pub fn is_deferred(value: &Value) -> bool {
    value.get("__nixdeploy").and_then(Value::as_str) == Some("deferred")
}

/// A prebuilt system given as a store path string: nothing to build, `copy` sends or
/// substitutes it.
fn prebuilt(what: &str, field: &str, path: &str) -> anyhow::Result<Toplevel> {
    let name = path.strip_prefix("/nix/store/").unwrap_or("");
    let valid = name.len() > 33
        && name.as_bytes()[32] == b'-'
        && !name.contains('/')
        && name[..32].bytes().all(|b| b.is_ascii_alphanumeric());
    if !valid {
        return Err(problem(
            what,
            format_args!(
                "field {field} must be a derivation or a store path (/nix/store/<hash>-<name>), found the string '{path}'"
            ),
        ));
    }
    Ok(Toplevel {
        drv_path: String::new(),
        out_path: path.to_string(),
        system: None,
    })
}

/// Builds a `Host` from merged fields and its toplevel; `build_on` is resolved by the caller.
pub fn host(name: HostName, fields: HostFields, toplevel: Toplevel, build_on: BuildOn) -> Host {
    let target_host = fields.target_host.unwrap_or_else(|| name.to_string());
    Host {
        // A loopback target with a port is an ssh target (a forwarded VM, a test listener).
        local: fields
            .local
            .unwrap_or_else(|| fields.target_port.is_none() && is_this_machine(&target_host)),
        target_host,
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
        cache: fields.cache,
        has_system: true,
        evaluation: Evaluation::Done,
        profiles: Vec::new(),
        system_position: 0,
        activate_defaults: fields.activate,
        substitute: fields.substitute,
        name,
    }
}

/// Whether an ssh destination names this machine (`localhost`, a loopback address).
pub fn is_this_machine(destination: &str) -> bool {
    matches!(destination, "localhost" | "127.0.0.1" | "::1")
}

/// Reads the `nixdeploy` output.
pub fn read(value: &Value) -> anyhow::Result<Parsed> {
    let top = Attrs::new("nixdeploy", value)?;
    top.deny_unknown(TOP_FIELDS)?;
    let builders = read_builders(&top)?;
    let mut allow_apply_all = true;
    let defaults = match top.get("defaults") {
        None => HostFields::default(),
        Some(v) => {
            let attrs = Attrs::new("nixdeploy.defaults", v)?;
            attrs.deny_unknown(HOST_FIELDS)?;
            allow_apply_all = attrs.boolean("allowApplyAll")?.unwrap_or(true);
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
        if let Some(key) = ONLY_DEFAULTS.iter().find(|k| attrs.has(k)) {
            return Err(attrs.field_problem(
                key,
                "is about the whole fleet; set it in nixdeploy.defaults",
            ));
        }
        let fields = HostFields::read(&attrs)?.over(&defaults);
        let missing = format!(
            "no toplevel: set nixdeploy.hosts.{name}.toplevel or define nixosConfigurations.{name}"
        );
        let toplevel = read_toplevel(&what, attrs.get("toplevel"), &missing)?;
        let build_on = resolve_build_on(&what, fields.build_on.as_deref(), &builders)?;
        let extra = match attrs.object("profiles")? {
            Some(map) => profiles::read_native(&what, map)?,
            None => Vec::new(),
        };
        let order = attrs.strings("profilesOrder")?;
        let (extra, system_position) = profiles::in_order(&what, extra, true, order.as_deref())?;
        let mut host = host(host_name, fields, toplevel, build_on);
        host.profiles = extra;
        host.system_position = system_position;
        hosts.push(host);
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
        allow_apply_all,
        warnings: Vec::new(),
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
