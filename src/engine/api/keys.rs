//! Secrets: `upload_key` and `upload_keys`.

use rhai::plugin::*;

/// Uploading secrets.
#[export_module]
pub mod api {
    use std::sync::Arc;

    use super::super::deploy::record;
    use super::super::{api, call_site, fail, target_hosts, Report};
    use crate::keys::{self, KeySpec, UploadAt};

    /// Uploads one secret to the hosts. The spec: `name` (a file name), exactly one of `text`,
    /// `file` (a local path) or `command` (an argv whose stdout is the secret), `dest_dir`
    /// (absolute, default `/run/keys`), `user`, `group` (default `root`), `permissions` (octal
    /// string, default `"0600"`), `insecure_dest_dir` (default `false`: a `dest_dir` that anyone
    /// but root can change is refused). The content travels only over the ssh channel's stdin; the file
    /// is created with its final mode and owner before any content and renamed into place. An
    /// owner that does not exist yet is set after the next activation. Every spec error is raised
    /// before any host is touched.
    ///
    /// ```rhai
    /// upload_key(hosts("@web"), #{ name: "app.key", command: ["pass", "show", "app"], user: "nginx", permissions: "0400" });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn upload_key(
        ctx: NativeCallContext,
        hosts: Dynamic,
        spec: rhai::Map,
    ) -> Result<Report, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let json: serde_json::Value = rhai::serde::from_dynamic(&Dynamic::from(spec))
            .map_err(|e| format!("upload_key: {e}"))?;
        let spec = KeySpec::parse(&json, None).map_err(|e| format!("upload_key: {e}"))?;
        spec.check_source()
            .map_err(|e| format!("upload_key: {e}"))?;
        let hosts = target_hosts(&api.ctx, &hosts)?;
        let secret = spec.read().map_err(|e| format!("upload_key: {e}"))?;
        let shared: keys::HostKeys = Arc::new(vec![(spec, secret)]);
        let items = hosts.into_iter().map(|h| (h, shared.clone())).collect();
        let results = api.ctx.runtime.block_on(keys::upload(&api.ctx, items));
        Ok(record(
            &api,
            Report::from_results("upload_key", call_site(&ctx), results, |_| None),
        ))
    }

    /// Uploads the keys the inventory declares for each host (`nixdeploy.hosts.<h>.keys`) whose
    /// `upload_at` is `when` (`"pre-activation"` or `"post-activation"`). Hosts without such keys
    /// are skipped. All specs of all hosts are checked before any host is touched.
    ///
    /// ```rhai
    /// upload_keys(copied, "pre-activation");
    /// let r = activate(copied);
    /// upload_keys(r, "post-activation");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn upload_keys(
        ctx: NativeCallContext,
        hosts: Dynamic,
        when: &str,
    ) -> Result<Report, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let when = match when {
            "pre-activation" => UploadAt::PreActivation,
            "post-activation" => UploadAt::PostActivation,
            other => return fail(format!("upload_keys: expected \"pre-activation\" or \"post-activation\", found \"{other}\"")),
        };
        let hosts = target_hosts(&api.ctx, &hosts)?;
        let items = keys::inventory_keys(&hosts, when)?;
        let results = api.ctx.runtime.block_on(keys::upload(&api.ctx, items));
        Ok(record(
            &api,
            Report::from_results("upload_keys", call_site(&ctx), results, |_| None),
        ))
    }
}
