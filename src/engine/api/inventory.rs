//! Inventory functions: `hosts`, `host`, and the properties of a host.

use rhai::plugin::*;

use super::HostRef;

/// Registers the `Host` type and its properties.
pub fn register_types(engine: &mut rhai::Engine) {
    engine
        .register_type_with_name::<HostRef>("Host")
        .register_get("name", |h: &mut HostRef| h.0.name.to_string())
        .register_get("target", |h: &mut HostRef| h.0.target_host.clone())
        .register_get("tags", |h: &mut HostRef| {
            h.0.tags
                .iter()
                .map(|t| Dynamic::from(t.clone()))
                .collect::<rhai::Array>()
        })
        .register_get("system", |h: &mut HostRef| h.0.system.clone())
        // Paths wait for the host's toplevel evaluation, which goes on in the background.
        .register_get("toplevel", |h: &mut HostRef| {
            h.0.evaluated_blocking().out_path.clone()
        })
        .register_get("drv", |h: &mut HostRef| {
            h.0.evaluated_blocking().drv_path.clone()
        })
        .register_get("build_on", |h: &mut HostRef| match &h.0.build_on {
            crate::fleet::BuildOn::Local => "local".to_string(),
            crate::fleet::BuildOn::Target => "target".to_string(),
            crate::fleet::BuildOn::Builder(b) => b.clone(),
        })
        .register_fn("has_tag", |h: &mut HostRef, tag: &str| {
            h.0.tags.iter().any(|t| t == tag)
        })
        .register_fn("to_string", |h: &mut HostRef| h.0.name.to_string())
        .register_fn("to_debug", |h: &mut HostRef| format!("host({})", h.0.name))
        .register_fn("==", |a: HostRef, b: HostRef| a.0.name == b.0.name)
        .register_fn("!=", |a: HostRef, b: HostRef| a.0.name != b.0.name);
}

/// Choosing hosts from the inventory.
#[export_module]
pub mod api {
    use super::super::{api, fail, targets::select};
    use super::HostRef;

    /// Every host this run may touch (all of the inventory, or those `--on` selects).
    ///
    /// ```rhai
    /// for h in hosts() { print(h.name); }
    /// ```
    #[rhai_fn(name = "hosts", return_raw)]
    pub fn all_hosts(ctx: NativeCallContext) -> Result<rhai::Array, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        Ok(api
            .ctx
            .allowed
            .iter()
            .map(|h| Dynamic::from(HostRef(h.clone())))
            .collect())
    }

    /// The hosts a selector matches: names, globs (`web-*`), tags (`@db`), `,` for union, `!` to
    /// exclude. Matching nothing is an error; hosts outside `--on` are never returned.
    ///
    /// ```rhai
    /// let web = hosts("@web,!web-3");
    /// ```
    #[rhai_fn(name = "hosts", return_raw)]
    pub fn hosts_matching(
        ctx: NativeCallContext,
        selector: &str,
    ) -> Result<rhai::Array, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        Ok(select(&api.ctx, selector)?
            .into_iter()
            .map(|h| Dynamic::from(HostRef(h)))
            .collect())
    }

    /// One host by name; an unknown name is an error that suggests the closest ones.
    ///
    /// ```rhai
    /// let db = host("db-1");
    /// print(db.tags);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn host(ctx: NativeCallContext, name: &str) -> Result<HostRef, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let Some(h) = api
            .ctx
            .inventory
            .hosts
            .get(&crate::fleet::HostName::new(name))
        else {
            let known: Vec<&str> = api.ctx.inventory.hosts.keys().map(|h| h.as_str()).collect();
            return fail(format!(
                "unknown host `{name}`; known hosts: {}",
                known.join(", ")
            ));
        };
        if !api.ctx.is_allowed(&h.name) {
            return fail(format!(
                "host `{name}` is not selected by --on; this run may not touch it"
            ));
        }
        Ok(HostRef(h.clone()))
    }
}
