//! The Rhai API surface — every function a runbook can call is defined (and documented) in this
//! folder, one file per family; `nixdeploy doc` renders these doc comments as the reference.

mod activate_flow;
pub mod deploy;
mod deploy_options;
pub mod gates;
pub mod inventory;
pub mod keys;
mod options;
pub mod pipeline;
pub mod plan;
pub mod probes;
pub mod remote;
mod report;
mod targets;

pub use report::{Entry, Report};
pub use targets::{target_hosts, targets, Targets};

use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext, Position};

use crate::context::Context;
use crate::fleet::Host;

/// A host from the inventory, as runbooks see it.
#[derive(Clone)]
pub struct HostRef(pub Arc<Host>);

/// What the engine shares with every API call (stored as the engine's tag).
pub struct Api {
    /// The run's context.
    pub ctx: Arc<Context>,
    /// Every report returned so far, to find failures the runbook never looked at.
    pub reports: Mutex<Vec<Report>>,
}

/// The engine's tag: a cheap clone of the shared API state.
#[derive(Clone)]
pub struct ApiHandle(pub Arc<Api>);

/// The shared API state of the calling engine.
pub fn api(ctx: &NativeCallContext) -> Result<Arc<Api>, Box<EvalAltResult>> {
    ctx.tag()
        .and_then(|t| t.clone().try_cast::<ApiHandle>())
        .map(|h| h.0)
        .ok_or_else(|| "internal error: the engine has no run context".into())
}

/// A runtime error at the call site (Rhai fills in the position).
pub fn fail<T>(message: impl Into<String>) -> Result<T, Box<EvalAltResult>> {
    Err(Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(message.into()),
        Position::NONE,
    )))
}

/// Where a native function was called from: `file:line:col`.
pub fn call_site(ctx: &NativeCallContext) -> String {
    let pos = ctx.call_position();
    let source = ctx.call_source().unwrap_or("runbook");
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{source}:{l}:{c}"),
        _ => source.to_string(),
    }
}

/// Registers every API family, the custom types and their properties.
pub fn register(engine: &mut Engine) {
    inventory::register_types(engine);
    report::register_type(engine);
    engine.register_global_module(rhai::exported_module!(inventory::api).into());
    engine.register_global_module(rhai::exported_module!(deploy::api).into());
    engine.register_global_module(rhai::exported_module!(remote::api).into());
    engine.register_global_module(rhai::exported_module!(gates::api).into());
    engine.register_global_module(rhai::exported_module!(keys::api).into());
    engine.register_global_module(rhai::exported_module!(pipeline::api).into());
    engine.register_global_module(rhai::exported_module!(probes::api).into());
    engine.register_global_module(rhai::exported_module!(plan::api).into());
}
