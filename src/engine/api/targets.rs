//! Turning a primitive's first argument — a host, an array of hosts or names, a selector, or a
//! report — into the hosts it acts on, never outside `--on`.

use std::sync::Arc;

use rhai::{Dynamic, EvalAltResult};

use super::{fail, HostRef, Report};
use crate::context::Context;
use crate::fleet::Host;

/// The hosts a call acts on, each with the system path a previous report gave it.
pub type Targets = Vec<(Arc<Host>, Option<String>)>;

/// Resolves `value` to hosts. A report contributes only the hosts it succeeded on.
/// Every host comes back evaluated (or failed): this waits for the hosts the background
/// toplevel pass has not finished yet.
pub fn targets(ctx: &Context, value: &Dynamic) -> Result<Targets, Box<EvalAltResult>> {
    let mut out = targets_as_selected(ctx, value)?;
    for (host, _) in &mut out {
        *host = host.evaluated_blocking();
    }
    Ok(out)
}

/// [`targets`] without the paths a report gave: just the hosts, evaluated.
pub fn target_hosts(ctx: &Context, value: &Dynamic) -> Result<Vec<Arc<Host>>, Box<EvalAltResult>> {
    Ok(targets(ctx, value)?.into_iter().map(|(h, _)| h).collect())
}

/// Like [`targets`], but without waiting for the hosts' toplevel evaluation: for a primitive
/// that waits for each host on its own (`deploy`'s pipeline). Hosts may still be evaluating.
pub fn targets_as_selected(ctx: &Context, value: &Dynamic) -> Result<Targets, Box<EvalAltResult>> {
    let mut out: Targets = Vec::new();
    collect(ctx, value, &mut out)?;
    let mut seen = std::collections::HashSet::new();
    out.retain(|(h, _)| seen.insert(h.name.clone()));
    Ok(out)
}

fn collect(ctx: &Context, value: &Dynamic, out: &mut Targets) -> Result<(), Box<EvalAltResult>> {
    if let Some(h) = value.clone().try_cast::<HostRef>() {
        out.push((allowed(ctx, h.0)?, None));
    } else if let Some(r) = value.clone().try_cast::<Report>() {
        r.mark_inspected();
        for e in r.entries().iter().filter(|e| e.ok) {
            out.push((e.host.clone(), e.path.clone()));
        }
    } else if value.is_array() {
        for item in value.clone().into_array().unwrap_or_default() {
            collect(ctx, &item, out)?;
        }
    } else if value.is_string() {
        let text = value.clone().into_string().unwrap_or_default();
        for h in select(ctx, &text)? {
            out.push((h, None));
        }
    } else {
        return fail(format!(
            "expected a host, an array of hosts, a selector string or a report, found {}",
            value.type_name()
        ));
    }
    Ok(())
}

fn allowed(ctx: &Context, host: Arc<Host>) -> Result<Arc<Host>, Box<EvalAltResult>> {
    if ctx.is_allowed(&host.name) {
        Ok(host)
    } else {
        fail(format!(
            "host `{}` is not selected by --on; this run may not touch it",
            host.name
        ))
    }
}

/// Hosts matching `selector`, within `--on`; matching nothing is an error.
pub fn select(ctx: &Context, selector: &str) -> Result<Vec<Arc<Host>>, Box<EvalAltResult>> {
    let matched = match ctx.inventory.select(Some(selector)) {
        Ok(m) => m,
        Err(e) => return fail(format!("{e:#}")),
    };
    let within: Vec<Arc<Host>> = matched
        .into_iter()
        .filter(|h| ctx.is_allowed(&h.name))
        .collect();
    if within.is_empty() {
        return fail(format!(
            "selector `{selector}` matches no host selected by --on"
        ));
    }
    Ok(within)
}
