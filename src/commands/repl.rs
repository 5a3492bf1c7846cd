//! `nixdeploy repl`: the inventory, context and session of a run, driven line by line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use crate::commands::run::make_context;
use crate::context::RunOptions;
use crate::engine::Session;
use crate::exit::Exit;
use crate::report::{Sink, TerminalSink};

/// Everything `nixdeploy repl` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub flake: String,
    pub on: Option<String>,
    pub lib: Vec<PathBuf>,
    pub parallel: usize,
    pub yes: bool,
    /// `--persist SECS` (`None`: `--no-persist`).
    pub persist: Option<std::time::Duration>,
    /// `--eval-jobs`, `--eval-memory`, `--no-eval-cache`.
    pub eval: crate::commands::run::EvalSettings,
}

/// Starts the REPL.
pub fn run(opts: Options) -> anyhow::Result<Exit> {
    // The selected hosts' toplevels are evaluated once, at the start of the session.
    let (inventory, evaluated) =
        crate::commands::run::load_selected(&opts.flake, opts.on.as_deref(), &opts.eval)?;
    let inventory = Arc::new(inventory);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let sinks: Vec<Box<dyn Sink>> = vec![Box::new(TerminalSink::new())];
    let options = RunOptions {
        parallel: opts.parallel,
        dry_run: false,
        yes: opts.yes,
        force_unlock: false,
        interactive: std::io::stdin().is_terminal(),
        sign_with: None,
        persist: opts.persist,
    };
    // No `watch_interrupts` here: the REPL's own handler cancels one input, not the session.
    let ctx = make_context(
        &runtime,
        inventory.clone(),
        opts.on.as_deref(),
        sinks,
        options,
        "repl",
    )?;
    crate::commands::run::report_evaluation(&ctx, &evaluated);
    let mut session = Session::new(
        Some(ctx.clone()),
        rhai::Map::new(),
        opts.lib.clone(),
        inventory.flake_inputs.clone(),
    );
    let outcome = crate::repl::run(&mut session, &ctx);
    runtime.block_on(crate::activation::settle(&ctx));
    ctx.reporter.finish();
    runtime.block_on(ctx.pool.close_all());
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    outcome.map(|()| Exit::Success)
}
