//! Planning primitives: `diff`, what deploying the new systems would change — read-only.

use rhai::plugin::*;

/// Closure diffs.
#[export_module]
pub mod api {
    use super::super::deploy::{record, with_paths};
    use super::super::{api, call_site, targets, Report};
    use crate::steps;

    /// Compares, per host, the closure it runs now (`/run/current-system`) with the new one
    /// (the `path` of a `build` report entry, or the host's system). Read-only: it runs in dry
    /// runs too. Entries carry `diff` (a map: `added`, `removed`, `changed`, `size_before`,
    /// `size_after`, `reboot_relevant`, ... — see `docs/closure-diff.md`), `text` (the diff
    /// rendered, `no change` for identical closures), `no_change` and `before`.
    ///
    /// ```rhai
    /// let d = diff(build(hosts()));
    /// for e in d.entries { print(`${e.host}:\n${e.text}`); }
    /// if d["web-1"].diff.reboot_relevant { warn("web-1 needs a reboot"); }
    /// ```
    #[rhai_fn(name = "diff", return_raw)]
    pub fn diff(ctx: NativeCallContext, built: Dynamic) -> Result<Report, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let items = with_paths(&targets(&api.ctx, &built)?);
        let results = api.ctx.runtime.block_on(steps::diff::diff(&api.ctx, items));
        Ok(record(
            &api,
            Report::from_results("diff", call_site(&ctx), results, |d| Some(d.path.clone())),
        ))
    }
}
