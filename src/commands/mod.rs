//! One module per subcommand; each takes plain options (never clap types) and returns an exit code.

pub mod check;
pub mod doc;
pub mod hosts;
pub mod log;
pub mod repl;
pub mod run;
pub mod sandbox;

/// Appends one journal record per host this run knew about (filled in once the journal lands).
pub fn journal_run(_ctx: &crate::context::Context, _elapsed: std::time::Duration) {}
