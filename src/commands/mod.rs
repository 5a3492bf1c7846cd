//! One module per subcommand; each takes plain options (never clap types) and returns an exit code.

pub mod askpass;
pub mod check;
pub mod doc;
pub mod hosts;
pub mod journal;
pub mod log;
pub mod repl;
pub mod run;
pub mod sandbox;

/// Appends one journal record per host this run knew about, stamped with `meta`.
pub fn journal_run(
    ctx: &std::sync::Arc<crate::context::Context>,
    elapsed: std::time::Duration,
    meta: &crate::journal::RunMeta,
) {
    journal::journal_run(ctx, elapsed, meta);
}
