//! `nixdeploy run`.

use std::path::PathBuf;

use crate::exit::Exit;

/// Everything `nixdeploy run` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub runbook: Option<PathBuf>,
    pub flake: String,
    pub on: Option<String>,
    pub lib: Vec<PathBuf>,
    pub parallel: usize,
    pub set: Vec<String>,
    pub json: bool,
    pub dry_run: bool,
    pub yes: bool,
    pub force_unlock: bool,
    pub help: bool,
}

/// Runs a runbook.
pub fn run(_opts: Options) -> anyhow::Result<Exit> {
    anyhow::bail!("`nixdeploy run` is being built")
}
