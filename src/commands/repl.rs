//! `nixdeploy repl`.

use std::path::PathBuf;

use crate::exit::Exit;

/// Everything `nixdeploy repl` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub flake: String,
    pub on: Option<String>,
    pub lib: Vec<PathBuf>,
    pub parallel: usize,
    pub yes: bool,
}

/// Starts the REPL.
pub fn run(_opts: Options) -> anyhow::Result<Exit> {
    anyhow::bail!("`nixdeploy repl` is being built")
}
