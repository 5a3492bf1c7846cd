//! Deploy primitives: `build`, `copy`, `activate`, `confirm`, `rollback`.

use rhai::plugin::*;

use super::{target_hosts, Report};

pub(crate) use super::activate_flow::{activate_chosen, REBOOT_TIMEOUT};

/// Building, copying and activating systems.
#[export_module]
pub mod api {
    use super::super::deploy_options::{activate_options, build_options, copy_options};
    use super::super::options::Options;
    use super::super::{api, call_site, target_hosts, targets, Report};
    use super::{all_hosts_of, record, with_paths};
    use crate::activation;
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
        let build_opts = build_options(&api.ctx, &mut opts)?;
        opts.finish()?;
        let hosts = target_hosts(&api.ctx, &hosts)?;
        let results = api
            .ctx
            .runtime
            .block_on(steps::build(&api.ctx, &hosts, &build_opts));
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
    /// `via` says how closures travel: `"direct"` (the default; also `"nix-copy"`) runs
    /// `nix copy` to each host, signed first when the host has a `signingKey` or the run
    /// `--sign-with`; `"cache"` signs and pushes the union of the hosts' closures once to the
    /// inventory's `cache` (only what it lacks) and each host substitutes its closure from
    /// there — a host that cannot reach the cache is copied to directly, and its entry says so
    /// (`fallback`); `"import"` sends the missing paths through `nix-store --import` run as
    /// root on the host (through its `privilegeEscalation`), for a login its Nix does not trust
    /// or a host without a Nix daemon (see docs/non-root.md).
    ///
    /// ```rhai
    /// copy(b, #{ substitute: false });
    /// let c = copy(b, #{ via: "cache" });
    /// ```
    #[rhai_fn(name = "copy", return_raw)]
    pub fn copy_with(
        ctx: NativeCallContext,
        built: Dynamic,
        options: rhai::Map,
    ) -> Result<Report, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let mut opts = Options::new("copy", options);
        let copy_opts = copy_options(&mut opts)?;
        opts.finish()?;
        let items = with_paths(&targets(&api.ctx, &built)?);
        let results = api
            .ctx
            .runtime
            .block_on(steps::copy(&api.ctx, items, copy_opts))
            .map_err(|e| format!("copy: {e:#}"))?;
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
        let choice = activate_options(&mut opts)?;
        opts.finish()?;
        let items = with_paths(&targets(&api.ctx, &built)?);
        let hosts: Vec<_> = items.iter().map(|(h, _)| h.clone()).collect();
        choice.which.check("activate", &hosts)?;
        let results = api
            .ctx
            .runtime
            .block_on(super::activate_chosen(&api.ctx, items, &choice));
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
        let hosts = target_hosts(&api.ctx, &hosts)?;
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
        let hosts = target_hosts(&api.ctx, &hosts)?;
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
    target_hosts(ctx, value)
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
