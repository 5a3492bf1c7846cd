//! `deploy`: build, copy, keys and activation as one pipeline per host.

use rhai::plugin::*;

/// Deploying hosts end to end, each at its own pace.
#[export_module]
pub mod api {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::super::activate_flow::activate_chosen;
    use super::super::deploy::record;
    use super::super::deploy_options::{activate_options, build_options, copy_options};
    use super::super::options::Options;
    use super::super::targets::targets_as_selected;
    use super::super::{api, call_site, Report};
    use crate::keys::{self, UploadAt};
    use crate::steps;

    /// Deploys the hosts as `apply.rhai` used to with `build`, `copy`, `upload_keys` and
    /// `activate` — but as a pipeline: each host is built, copied, given its inventory keys
    /// and activated as soon as its own previous stage is done, without waiting for the other
    /// hosts. A host that fails a stage drops out; the others go on.
    ///
    /// ```rhai
    /// let r = deploy(hosts("@web"));
    /// if !r.ok { print(r.failed); }
    /// ```
    #[rhai_fn(name = "deploy", return_raw)]
    pub fn deploy(ctx: NativeCallContext, hosts: Dynamic) -> Result<Report, Box<EvalAltResult>> {
        deploy_with(ctx, hosts, rhai::Map::new())
    }

    /// `deploy` with options: every option of `build` (`on`), `copy` (`substitute`, `via`) and
    /// `activate` (`mode`, `magic_rollback`, `auto_rollback`, `confirm_timeout`,
    /// `activation_timeout`, `settle`, `on_refusal`, `confirm`, `profile`, `specialisation`,
    /// `reboot`), meaning what it means there, plus `keys` (default `true`: upload the keys the
    /// inventory declares for each host, those with `upload_at: "pre-activation"` right before
    /// its activation and `"post-activation"` right after it; every key spec is checked and
    /// every secret read before any host is touched).
    ///
    /// Each host goes through `build` → `copy` → `upload_keys` (pre-activation) → `activate`
    /// (all its profiles) → `upload_keys` (post-activation) on its own. Hosts whose evaluation
    /// finishes at the same moment are built by one Nix invocation; at most `--parallel` hosts
    /// are between copy and activation at once. Events and the journal show the same steps as
    /// the separate primitives. `via: "cache"` pushes once for every host, so there the push
    /// waits for every build; then each host substitutes from the cache and goes on alone.
    /// A host already in a report (from `build`, say) counts as built at the report's path.
    ///
    /// Returns one report, step `"deploy"`, whose entries are like `activate`'s (`path`,
    /// `state`, `profiles`, ...); a failed host's `error` starts with the stage it failed in
    /// (`"copy: ..."`).
    ///
    /// ```rhai
    /// let r = deploy(hosts(), #{ mode: "boot", via: "cache", keys: false });
    /// deploy(hosts("@db"), #{ on: #{ "db-1": "target" }, settle: 0 });
    /// ```
    #[rhai_fn(name = "deploy", return_raw)]
    pub fn deploy_with(
        ctx: NativeCallContext,
        hosts: Dynamic,
        options: rhai::Map,
    ) -> Result<Report, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let mut opts = Options::new("deploy", options);
        let build = build_options(&api.ctx, &mut opts)?;
        let copy = copy_options(&mut opts)?;
        let choice = activate_options(&mut opts)?;
        let with_keys = opts.bool("keys")?.unwrap_or(true);
        opts.finish()?;
        // Hosts as selected, still evaluating: the pipeline waits for each on its own.
        let targets = targets_as_selected(&api.ctx, &hosts)?;
        let selected: Vec<_> = targets.iter().map(|(h, _)| h.clone()).collect();
        // What can be checked without the toplevels is checked before any host is touched.
        choice.which.check("deploy", &selected)?;
        if copy.via == steps::Via::Cache {
            steps::check_caches(&selected).map_err(|e| format!("deploy: {e:#}"))?;
        }
        let by_name = |items: Vec<(Arc<crate::fleet::Host>, keys::HostKeys)>| {
            items
                .into_iter()
                .map(|(h, k)| (h.name.to_string(), k))
                .collect::<BTreeMap<_, _>>()
        };
        let (keys_before, keys_after) = if with_keys {
            let before = keys::inventory_keys(&selected, UploadAt::PreActivation)
                .map_err(|e| format!("deploy: {e}"))?;
            let after = keys::inventory_keys(&selected, UploadAt::PostActivation)
                .map_err(|e| format!("deploy: {e}"))?;
            (by_name(before), by_name(after))
        } else {
            Default::default()
        };
        let (run, choice) = (api.ctx.clone(), Arc::new(choice));
        let activate: steps::Activation<_> = Arc::new(move |host, path| {
            let (ctx, choice) = (run.clone(), choice.clone());
            Box::pin(async move {
                match activate_chosen(&ctx, vec![(host, path)], &choice)
                    .await
                    .pop()
                {
                    Some((_, r)) => r,
                    None => Err("internal error: activate returned no result".into()),
                }
            })
        });
        let pipeline = steps::Pipeline {
            build,
            copy,
            keys_before,
            keys_after,
            activate,
        };
        let results = api
            .ctx
            .runtime
            .block_on(steps::deploy(&api.ctx, targets, pipeline));
        Ok(record(
            &api,
            Report::from_results("deploy", call_site(&ctx), results, |a| {
                Some(a.system.path.clone()).filter(|p| !p.is_empty())
            }),
        ))
    }
}
