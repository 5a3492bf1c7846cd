//! The option groups of `build`, `copy` and `activate`, each read by one parser that `deploy`
//! (which takes the union of the three) shares with its own primitive.

use std::collections::BTreeMap;

use rhai::EvalAltResult;

use super::activate_flow::{Given, Which};
use super::fail;
use super::options::Options;
use crate::activation::{ActivateOptions, ConfirmMode, Mode, OnRefusal};
use crate::context::Context;
use crate::fleet::BuildOn;
use crate::steps;

/// Reads `build`'s options: `on`, where each named host is built.
pub(crate) fn build_options(
    ctx: &Context,
    opts: &mut Options,
) -> Result<steps::BuildOptions, Box<EvalAltResult>> {
    let what = opts.what().to_string();
    let mut build_on = BTreeMap::new();
    if let Some(on) = opts.raw("on") {
        let Some(map) = on.try_cast::<rhai::Map>() else {
            return fail(format!("{what}: option `on` must be a map of host name to \"local\", \"target\" or a builder name"));
        };
        for (name, place) in map {
            let place = place
                .into_string()
                .map_err(|t| format!("{what}: `on.{name}` must be a string, found {t}"))?;
            let place = match place.as_str() {
                "local" => BuildOn::Local,
                "target" => BuildOn::Target,
                b if ctx.inventory.builders.contains_key(b) => BuildOn::Builder(b.to_string()),
                b => {
                    let known: Vec<&str> =
                        ctx.inventory.builders.keys().map(String::as_str).collect();
                    let known = if known.is_empty() {
                        "the inventory defines none (nixdeploy.builders)".to_string()
                    } else {
                        known.join(", ")
                    };
                    return fail(format!(
                        "{what}: unknown builder `{b}` for {name}; use \"local\", \"target\" or a builder; builders: {known}"
                    ));
                }
            };
            build_on.insert(name.to_string(), place);
        }
    }
    Ok(steps::BuildOptions { build_on })
}

/// Reads `copy`'s options: `substitute` and `via`.
pub(crate) fn copy_options(opts: &mut Options) -> Result<steps::CopyOptions, Box<EvalAltResult>> {
    let what = opts.what().to_string();
    let substitute = opts.bool("substitute")?;
    let via = match opts.string("via")? {
        Some(v) => steps::Via::parse(&v).map_err(|e| format!("{what}: {e}"))?,
        None => steps::Via::Direct,
    };
    Ok(steps::CopyOptions { substitute, via })
}

/// Everything `activate`'s options decide.
#[derive(Debug, Clone)]
pub(crate) struct ActivateChoice {
    /// The system's options before the inventory's per-host settings.
    pub base: ActivateOptions,
    /// Which of those the runbook gave (they win over the inventory's).
    pub given: Given,
    /// Which profiles.
    pub which: Which,
    /// `specialisation`: activate the system's `specialisation/<name>` instead.
    pub specialisation: Option<String>,
    /// `reboot`: reboot every host that activated.
    pub reboot: bool,
}

/// Reads `activate`'s options: `mode`, `magic_rollback`, `auto_rollback`, `confirm_timeout`,
/// `activation_timeout`, `settle`, `on_refusal`, `confirm`, `profile`, `specialisation`,
/// `reboot`, and checks that they go together.
pub(crate) fn activate_options(opts: &mut Options) -> Result<ActivateChoice, Box<EvalAltResult>> {
    let what = opts.what().to_string();
    let mut o = ActivateOptions::default();
    let mut given = Given::default();
    if let Some(mode) = opts.string("mode")? {
        o.mode = Mode::parse(&mode).map_err(|e| format!("{what}: {e}"))?;
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
        o.on_refusal = OnRefusal::parse(&r).map_err(|e| format!("{what}: {e}"))?;
    }
    if let Some(c) = opts.string("confirm")? {
        o.confirm = match c.as_str() {
            "auto" => ConfirmMode::Auto,
            "manual" => ConfirmMode::Manual,
            other => {
                return fail(format!(
                    "{what}: option `confirm` must be \"auto\" or \"manual\", found \"{other}\""
                ))
            }
        };
    }
    let mut which = Which::parse(opts.string("profile")?)?;
    let specialisation = opts.string("specialisation")?;
    let reboot = opts.bool("reboot")?.unwrap_or(false);
    if specialisation.is_some() && matches!(which, Which::Named(_)) {
        return fail(format!("{what}: `specialisation` is about the system; it cannot be combined with `profile` naming another profile"));
    }
    if o.mode != Mode::Switch {
        // Other profiles have one activation, a switch; boot/test/dry-activate are the
        // system's alone.
        match &which {
            Which::Named(name) => {
                return fail(format!(
                    "{what}: profile `{name}` can only be activated in mode \"switch\", not \"{}\"",
                    o.mode.as_str()
                ))
            }
            _ => which = Which::System,
        }
    }
    Ok(ActivateChoice {
        base: o,
        given,
        which,
        specialisation,
        reboot,
    })
}
