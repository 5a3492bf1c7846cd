//! Deploy primitives: `build`, `copy`, `activate`, `confirm`, `rollback`.

use rhai::plugin::*;

use std::sync::Arc;

use super::{targets, Report};
use crate::fleet::Host;

/// Building, copying and activating systems.
#[export_module]
pub mod api {
    use std::collections::BTreeMap;

    use super::super::options::Options;
    use super::super::{api, call_site, fail, targets, Report};
    use super::{all_hosts_of, record, with_paths};
    use crate::activation::{self, ActivateOptions, ConfirmMode, Mode, OnRefusal};
    use crate::fleet::BuildOn;
    use crate::steps;

    /// Builds the systems of the hosts — ONE Nix invocation for all hosts built here, remote
    /// builders through Nix's own `--builders`, `buildOn = "target"` hosts on the host itself.
    /// Returns a report whose entries carry each host's toplevel `path`.
    ///
    /// ```rhai
    /// let b = build(hosts("@web"));
    /// print(b["web-1"].path);
    /// ```
    #[rhai_fn(name = "build", return_raw)]
    pub fn build(ctx: NativeCallContext, hosts: Dynamic) -> Result<Report, Box<EvalAltResult>> {
        build_with(ctx, hosts, rhai::Map::new())
    }

    /// `build` with options: `on` maps host names to where each is built (`"local"`,
    /// `"target"`, or a builder name), e.g. from `builders::plan`.
    ///
    /// ```rhai
    /// let b = build(hosts(), #{ on: #{ "arm-1": "arm" } });
    /// ```
    #[rhai_fn(name = "build", return_raw)]
    pub fn build_with(
        ctx: NativeCallContext,
        hosts: Dynamic,
        options: rhai::Map,
    ) -> Result<Report, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let mut opts = Options::new("build", options);
        let mut build_on = BTreeMap::new();
        if let Some(on) = opts.raw("on") {
            let Some(map) = on.try_cast::<rhai::Map>() else {
                return fail("build: option `on` must be a map of host name to \"local\", \"target\" or a builder name");
            };
            for (name, place) in map {
                let place = place
                    .into_string()
                    .map_err(|t| format!("build: `on.{name}` must be a string, found {t}"))?;
                let place = match place.as_str() {
                    "local" => BuildOn::Local,
                    "target" => BuildOn::Target,
                    b if api.ctx.inventory.builders.contains_key(b) => {
                        BuildOn::Builder(b.to_string())
                    }
                    b => {
                        let known: Vec<&str> = api
                            .ctx
                            .inventory
                            .builders
                            .keys()
                            .map(String::as_str)
                            .collect();
                        return fail(format!(
                            "build: unknown builder `{b}` for {name}; builders: {}",
                            known.join(", ")
                        ));
                    }
                };
                build_on.insert(name.to_string(), place);
            }
        }
        opts.finish()?;
        let hosts: Vec<_> = targets(&api.ctx, &hosts)?
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        let results = api.ctx.runtime.block_on(steps::build(
            &api.ctx,
            &hosts,
            &steps::BuildOptions { build_on },
        ));
        Ok(record(
            &api,
            Report::from_results("build", call_site(&ctx), results, |b| Some(b.path.clone())),
        ))
    }

    /// Copies each host's closure to it over its open connection — only the paths it lacks,
    /// nothing when it already has them. Takes a `build` report (or hosts, whose systems must
    /// already be built).
    ///
    /// ```rhai
    /// let c = copy(build(hosts()));
    /// ```
    #[rhai_fn(name = "copy", return_raw)]
    pub fn copy(ctx: NativeCallContext, built: Dynamic) -> Result<Report, Box<EvalAltResult>> {
        copy_with(ctx, built, rhai::Map::new())
    }

    /// `copy` with options: `substitute` lets hosts fetch paths from their own binary caches
    /// (default: the host's `substituteOnDestination` — colmena's, or `false` for a deploy-rs
    /// `fastConnection` — else `true`). Every profile of the host is copied, not only the
    /// system; a prebuilt store path this machine lacks is substituted by the host itself.
    ///
    /// ```rhai
    /// copy(b, #{ substitute: false });
    /// ```
    #[rhai_fn(name = "copy", return_raw)]
    pub fn copy_with(
        ctx: NativeCallContext,
        built: Dynamic,
        options: rhai::Map,
    ) -> Result<Report, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let mut opts = Options::new("copy", options);
        let substitute = opts.bool("substitute")?;
        opts.finish()?;
        let items = with_paths(&targets(&api.ctx, &built)?);
        let results = api.ctx.runtime.block_on(steps::copy(
            &api.ctx,
            items,
            steps::CopyOptions { substitute },
        ));
        Ok(record(
            &api,
            Report::from_results("copy", call_site(&ctx), results, |c| Some(c.path.clone())),
        ))
    }

    /// Activates each host's new system in `switch` mode with magic rollback.
    ///
    /// ```rhai
    /// activate(copy(build(hosts())));
    /// ```
    #[rhai_fn(name = "activate", return_raw)]
    pub fn activate(ctx: NativeCallContext, built: Dynamic) -> Result<Report, Box<EvalAltResult>> {
        activate_with(ctx, built, rhai::Map::new())
    }

    /// Activates each host's new system and its other profiles, in the host's deploy order
    /// (`profilesOrder`). Options: `mode` (`"switch"`, `"boot"`, `"test"`, `"dry-activate"`),
    /// `magic_rollback` (default `true`: the host rolls itself back unless confirmed over a
    /// brand-new connection), `auto_rollback` (default `true`: a profile whose activation fails
    /// goes back to what it pointed at), `confirm_timeout` (30 s), `activation_timeout`
    /// (240 s), `confirm` (`"auto"`, or `"manual"`: the runbook calls `confirm` or `rollback`;
    /// the system only), `settle` (2 s: how long a host must keep answering brand-new
    /// connections after its activation before it is confirmed; `0` confirms at once),
    /// `on_refusal` (`"fail"`, or `"boot"`: when NixOS refuses a live switch because of switch
    /// inhibitors, make the new system the boot default instead; it runs after the next
    /// reboot), `profile` (`"all"`, the default; `"system"`; or one profile's name).
    /// With magic rollback, `switch` activates with `test` first and sets the profile and the
    /// boot default only once confirmed, so a host that reboots before that comes back on its
    /// previous system.
    /// Profiles other than the system are activated in mode `"switch"` only; other modes
    /// touch the system alone. `specialisation: "name"` activates the system's
    /// `specialisation/<name>` instead (its own toplevel, which the profile then points at);
    /// a host whose system has no such specialisation fails before anything is switched.
    /// `reboot: true` then reboots every host that activated, as `reboot` does (usually with
    /// `mode: "boot"`): the entry carries `rebooted`.
    /// Options the runbook leaves out come from the inventory (deploy-rs's `magicRollback`,
    /// `confirmTimeout`, ..., or a host's `activate` set), per host and per profile.
    /// A host already running the system, or a profile already pointing at its path, is left
    /// alone (no new generation).
    ///
    /// ```rhai
    /// let r = activate(b, #{ mode: "switch", confirm_timeout: 60 });
    /// if !r.ok { print(r.failed); }
    /// activate(b, #{ profile: "myapp" });     // just that profile, on every host that has it
    /// activate(b, #{ specialisation: "rescue" });
    /// activate(b, #{ mode: "boot", reboot: true });   // new kernel: boot into it, check it runs
    /// ```
    #[rhai_fn(name = "activate", return_raw)]
    pub fn activate_with(
        ctx: NativeCallContext,
        built: Dynamic,
        options: rhai::Map,
    ) -> Result<Report, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let mut opts = Options::new("activate", options);
        let mut o = ActivateOptions::default();
        let mut given = super::Given::default();
        if let Some(mode) = opts.string("mode")? {
            o.mode = Mode::parse(&mode).map_err(|e| format!("activate: {e}"))?;
        }
        if let Some(m) = opts.bool("magic_rollback")? {
            o.magic_rollback = m;
            given.magic_rollback = Some(m);
        }
        given.auto_rollback = opts.bool("auto_rollback")?;
        if let Some(t) = opts.seconds("confirm_timeout")? {
            o.confirm_timeout = t;
            given.confirm_timeout = Some(t);
        }
        if let Some(t) = opts.seconds("activation_timeout")? {
            o.activation_timeout = t;
            given.activation_timeout = Some(t);
        }
        if let Some(t) = opts.seconds("settle")? {
            o.settle = t;
        }
        if let Some(r) = opts.string("on_refusal")? {
            o.on_refusal = OnRefusal::parse(&r).map_err(|e| format!("activate: {e}"))?;
        }
        if let Some(c) = opts.string("confirm")? {
            o.confirm = match c.as_str() {
                "auto" => ConfirmMode::Auto,
                "manual" => ConfirmMode::Manual,
                other => {
                    return fail(format!(
                    "activate: option `confirm` must be \"auto\" or \"manual\", found \"{other}\""
                ))
                }
            };
        }
        let mut which = super::Which::parse(opts.string("profile")?)?;
        let specialisation = opts.string("specialisation")?;
        let reboot = opts.bool("reboot")?.unwrap_or(false);
        opts.finish()?;
        if specialisation.is_some() && matches!(which, super::Which::Named(_)) {
            return fail("activate: `specialisation` is about the system; it cannot be combined with `profile` naming another profile");
        }
        if o.mode != Mode::Switch {
            // Other profiles have one activation, a switch; boot/test/dry-activate are the
            // system's alone.
            match &which {
                super::Which::Named(name) => {
                    return fail(format!(
                        "activate: profile `{name}` can only be activated in mode \"switch\", not \"{}\"",
                        o.mode.as_str()
                    ))
                }
                _ => which = super::Which::System,
            }
        }
        let mut items = with_paths(&targets(&api.ctx, &built)?);
        which.check(&items)?;
        // A specialisation is resolved on every host before anything is switched.
        let mut unknown = Vec::new();
        if let Some(name) = &specialisation {
            let resolved = api
                .ctx
                .runtime
                .block_on(steps::specialisation(&api.ctx, items, name));
            items = Vec::new();
            for (host, r) in resolved {
                match r {
                    Ok(o) => items.push((host, o.value)),
                    Err(e) => unknown.push((host, Err(e))),
                }
            }
        }
        let mut results = api
            .ctx
            .runtime
            .block_on(super::activate_all(&api.ctx, items, o, given, which));
        results.extend(unknown);
        if reboot {
            results = api.ctx.runtime.block_on(super::reboot_after(
                &api.ctx,
                results,
                super::REBOOT_TIMEOUT,
            ));
        }
        Ok(record(
            &api,
            Report::from_results("activate", call_site(&ctx), results, |a| {
                Some(a.system.path.clone()).filter(|p| !p.is_empty())
            }),
        ))
    }

    /// Reboots the hosts: starts each reboot detached, drops the pooled connection, waits until
    /// the host answers with a new boot id (up to 300 s), and checks that it runs the system its
    /// profile points at. Entries carry `path`, `boot_id_before`, `boot_id`, `seconds`. The
    /// machine nixdeploy runs on (a local host) is never rebooted.
    ///
    /// ```rhai
    /// reboot(hosts("@db"));
    /// ```
    #[rhai_fn(name = "reboot", return_raw)]
    pub fn reboot(ctx: NativeCallContext, hosts: Dynamic) -> Result<Report, Box<EvalAltResult>> {
        reboot_with(ctx, hosts, rhai::Map::new())
    }

    /// `reboot` with options: `timeout` (seconds, default 300) for each host to come back.
    ///
    /// ```rhai
    /// reboot(activate(c, #{ mode: "boot" }), #{ timeout: 600 });
    /// ```
    #[rhai_fn(name = "reboot", return_raw)]
    pub fn reboot_with(
        ctx: NativeCallContext,
        hosts: Dynamic,
        options: rhai::Map,
    ) -> Result<Report, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let mut opts = Options::new("reboot", options);
        let timeout = opts.seconds("timeout")?.unwrap_or(super::REBOOT_TIMEOUT);
        opts.finish()?;
        let hosts: Vec<_> = targets(&api.ctx, &hosts)?
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        let results = api
            .ctx
            .runtime
            .block_on(steps::reboot(&api.ctx, &hosts, timeout));
        Ok(record(
            &api,
            Report::from_results("reboot", call_site(&ctx), results, |r| Some(r.path.clone())),
        ))
    }

    /// Confirms activations made with `confirm: "manual"`, keeping the new systems.
    ///
    /// ```rhai
    /// let r = activate(b, #{ confirm: "manual", confirm_timeout: 120 });
    /// if exec(r, "systemctl is-system-running").ok { confirm(r); } else { rollback(r); }
    /// ```
    #[rhai_fn(name = "confirm", return_raw)]
    pub fn confirm(ctx: NativeCallContext, hosts: Dynamic) -> Result<Report, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let hosts: Vec<_> = targets(&api.ctx, &hosts)?
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        let results = api
            .ctx
            .runtime
            .block_on(activation::confirm(&api.ctx, &hosts));
        Ok(record(
            &api,
            Report::from_results("confirm", call_site(&ctx), results, |a| {
                Some(a.path.clone())
            }),
        ))
    }

    /// Rolls hosts back: an activation still waiting for confirmation is undone at once;
    /// otherwise the profile moves to its previous generation, which is activated.
    ///
    /// ```rhai
    /// rollback(hosts("@canary"));
    /// ```
    #[rhai_fn(name = "rollback", return_raw)]
    pub fn rollback(ctx: NativeCallContext, hosts: Dynamic) -> Result<Report, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let hosts: Vec<_> = all_hosts_of(&api.ctx, &hosts)?;
        let results = api
            .ctx
            .runtime
            .block_on(activation::rollback(&api.ctx, &hosts));
        Ok(record(
            &api,
            Report::from_results("rollback", call_site(&ctx), results, |a| {
                Some(a.path.clone())
            }),
        ))
    }
}

/// The hosts of `value`; for a report, every host it covers (failed ones too).
pub(crate) fn all_hosts_of(
    ctx: &crate::context::Context,
    value: &Dynamic,
) -> Result<Vec<std::sync::Arc<crate::fleet::Host>>, Box<EvalAltResult>> {
    if let Some(r) = value.clone().try_cast::<Report>() {
        r.mark_inspected();
        return Ok(r.entries().iter().map(|e| e.host.clone()).collect());
    }
    Ok(targets(ctx, value)?.into_iter().map(|(h, _)| h).collect())
}

/// The `activate` options the runbook gave, which win over the inventory's per-host ones.
#[derive(Debug, Clone, Default)]
pub(crate) struct Given {
    magic_rollback: Option<bool>,
    auto_rollback: Option<bool>,
    confirm_timeout: Option<std::time::Duration>,
    activation_timeout: Option<std::time::Duration>,
}

/// Which of a host's profiles `activate` deals with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Which {
    /// The system and every other profile, in the host's order.
    All,
    /// Only the system profile.
    System,
    /// Only the named profile.
    Named(String),
}

impl Which {
    fn parse(option: Option<String>) -> Result<Which, Box<EvalAltResult>> {
        Ok(match option.as_deref() {
            None | Some("all") => Which::All,
            Some("system") => Which::System,
            Some(name) => Which::Named(name.to_string()),
        })
    }

    /// A named profile must exist on every host it is asked of: an error before any host.
    fn check(&self, items: &[(Arc<Host>, String)]) -> Result<(), Box<EvalAltResult>> {
        if let Which::Named(name) = self {
            for (host, _) in items {
                if !host.profiles.iter().any(|p| &p.name == name) {
                    let known = host.profiles.iter().map(|p| p.name.as_str());
                    return Err(format!(
                        "activate: host {}: {}",
                        host.name,
                        crate::fleet::unknown_profile(name, known)
                    )
                    .into());
                }
            }
        }
        Ok(())
    }
}

/// What `activate` did on one host: the system (empty when untouched) and its other profiles.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct ActivatedHost {
    /// The system activation.
    #[serde(flatten)]
    pub system: crate::activation::Activated,
    /// The other profiles, in the order they were activated.
    pub profiles: Vec<crate::steps::ProfileActivated>,
    /// The reboot that followed, with `reboot: true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebooted: Option<crate::steps::Rebooted>,
}

/// How long `reboot` waits for a host to come back unless told.
pub(crate) const REBOOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// `activate(..., #{ reboot: true })`: reboots the hosts whose activation succeeded and
/// records the reboot in their entries; a host that does not come back fails.
pub(crate) async fn reboot_after(
    ctx: &Arc<crate::context::Context>,
    results: Vec<crate::steps::HostResult<ActivatedHost>>,
    timeout: std::time::Duration,
) -> Vec<crate::steps::HostResult<ActivatedHost>> {
    let ok: Vec<Arc<Host>> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(h, _)| h.clone())
        .collect();
    let mut rebooted: std::collections::BTreeMap<String, Result<_, String>> =
        crate::steps::reboot(ctx, &ok, timeout)
            .await
            .into_iter()
            .map(|(h, r)| (h.name.to_string(), r))
            .collect();
    results
        .into_iter()
        .map(|(h, r)| {
            let r = match (r, rebooted.remove(h.name.as_str())) {
                (Ok(mut done), Some(Ok(b))) => {
                    done.value.rebooted = Some(b.value);
                    Ok(done)
                }
                (Ok(_), Some(Err(e))) => Err(e),
                (r, _) => r,
            };
            (h, r)
        })
        .collect()
}

/// Hosts whose system activation shares one set of options.
type SystemGroup = (crate::activation::ActivateOptions, Vec<(Arc<Host>, String)>);

type HostOutcome = Result<crate::steps::Outcome<ActivatedHost>, String>;

/// `activate` over every host: the profiles that come before the system, the system (grouped
/// by the inventory's rollback and timeout settings), then the profiles after it. A host whose
/// step fails takes no further step.
pub(crate) async fn activate_all(
    ctx: &Arc<crate::context::Context>,
    items: Vec<(Arc<Host>, String)>,
    base: crate::activation::ActivateOptions,
    given: Given,
    which: Which,
) -> Vec<crate::steps::HostResult<ActivatedHost>> {
    use crate::steps::{activate_profiles, Outcome, ProfileOptions};
    let mut state: std::collections::BTreeMap<String, HostOutcome> = items
        .iter()
        .map(|(h, p)| {
            let system = crate::activation::Activated {
                path: if h.has_system {
                    p.clone()
                } else {
                    String::new()
                },
                state: "unchanged".into(),
                ..Default::default()
            };
            let value = ActivatedHost {
                system,
                ..Default::default()
            };
            (
                h.name.to_string(),
                Ok(Outcome::skipped(value, "nothing to activate")),
            )
        })
        .collect();
    let popts = ProfileOptions {
        magic_rollback: given.magic_rollback,
        auto_rollback: given.auto_rollback,
        confirm_timeout: given.confirm_timeout,
        activation_timeout: given.activation_timeout,
    };
    let part = |before: bool| -> crate::steps::PickProfiles {
        let which = which.clone();
        Arc::new(move |h: &Host| {
            let (first, rest) = h.profiles.split_at(h.system_position.min(h.profiles.len()));
            let side = if before { first } else { rest };
            side.iter()
                .filter(|p| match &which {
                    Which::All => true,
                    Which::System => false,
                    Which::Named(n) => &p.name == n,
                })
                .cloned()
                .collect()
        })
    };
    let alive = |state: &std::collections::BTreeMap<String, HostOutcome>,
                 want: &dyn Fn(&Host) -> bool| {
        items
            .iter()
            .filter(|(h, _)| state.get(h.name.as_str()).is_some_and(|r| r.is_ok()) && want(h))
            .cloned()
            .collect::<Vec<_>>()
    };
    for before in [true, false] {
        if !before {
            // The system, between the two halves of the profiles.
            let wants_system = matches!(which, Which::All | Which::System);
            let mut groups: std::collections::BTreeMap<String, SystemGroup> = Default::default();
            for (h, p) in alive(&state, &|h| wants_system && h.has_system) {
                let o = for_host(&base, &given, &h);
                let key = format!("{o:?}");
                groups
                    .entry(key)
                    .or_insert_with(|| (o, Vec::new()))
                    .1
                    .push((h, p));
            }
            for (_, (o, group)) in groups {
                for (h, r) in crate::activation::activate(ctx, group, o).await {
                    let entry = state
                        .get_mut(h.name.as_str())
                        .expect("every host has a state");
                    *entry = r.map(|out| Outcome {
                        value: ActivatedHost {
                            system: out.value,
                            ..Default::default()
                        },
                        state: out.state,
                        message: out.message,
                    });
                }
            }
        }
        let pick = part(before);
        let hosts: Vec<Arc<Host>> = alive(&state, &|h| !pick(h).is_empty())
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        if hosts.is_empty() {
            continue;
        }
        for (h, r) in activate_profiles(ctx, &hosts, pick, popts.clone()).await {
            let entry = state
                .get_mut(h.name.as_str())
                .expect("every host has a state");
            *entry = match (entry.clone(), r) {
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                (Ok(mut so_far), Ok(done)) => {
                    let changed = done.state != crate::report::StepState::Skipped;
                    so_far.value.profiles.extend(done.value);
                    if changed && so_far.state == crate::report::StepState::Skipped {
                        so_far.state = done.state;
                    }
                    so_far.message = match (so_far.message, done.message) {
                        (Some(a), Some(b)) if so_far.state != crate::report::StepState::Skipped => {
                            Some(format!("{a}; {b}"))
                        }
                        (a, b) => b.or(a),
                    };
                    Ok(so_far)
                }
            };
        }
    }
    items
        .into_iter()
        .map(|(h, _)| {
            let r = state
                .remove(h.name.as_str())
                .unwrap_or_else(|| Err("not activated".into()));
            (h, r)
        })
        .collect()
}

/// The system's activate options for one host: the runbook's, else the inventory's, else the
/// built-in defaults.
fn for_host(
    base: &crate::activation::ActivateOptions,
    given: &Given,
    host: &Host,
) -> crate::activation::ActivateOptions {
    let inv = &host.activate_defaults;
    let mut o = base.clone();
    if given.magic_rollback.is_none() {
        if let Some(m) = inv.magic_rollback {
            o.magic_rollback = m;
        }
    }
    if given.confirm_timeout.is_none() {
        if let Some(t) = inv.confirm_timeout {
            o.confirm_timeout = std::time::Duration::from_secs(t);
        }
    }
    if given.activation_timeout.is_none() {
        if let Some(t) = inv.activation_timeout {
            o.activation_timeout = std::time::Duration::from_secs(t);
        }
    }
    o
}

pub(crate) fn with_paths(t: &super::Targets) -> Vec<(std::sync::Arc<crate::fleet::Host>, String)> {
    t.iter()
        .map(|(h, p)| (h.clone(), p.clone().unwrap_or_else(|| h.out_path.clone())))
        .collect()
}

pub(crate) fn record(api: &super::Api, report: Report) -> Report {
    api.reports.lock().unwrap().push(report.clone());
    report
}
