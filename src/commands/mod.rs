//! One module per subcommand; each takes plain options (never clap types) and returns an exit code.

pub mod annotations;
pub mod check;
pub mod disconnect;
pub mod doc;
pub mod doctor;
pub mod hosts;
pub mod init;
pub mod journal;
pub mod log;
pub mod repl;
pub mod run;
pub mod runbooks;
pub mod sandbox;
pub mod shipped;

/// Appends one journal record per host this run knew about, stamped with `meta`.
pub fn journal_run(
    ctx: &std::sync::Arc<crate::context::Context>,
    elapsed: std::time::Duration,
    meta: &crate::journal::RunMeta,
) {
    journal::journal_run(ctx, elapsed, meta);
}
