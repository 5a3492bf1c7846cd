//! `nixdeploy check`.

use std::path::PathBuf;

use crate::exit::Exit;

/// Compiles runbooks without contacting hosts.
pub fn run(_runbooks: &[PathBuf], _lib: &[PathBuf], _flake: Option<&str>) -> anyhow::Result<Exit> {
    anyhow::bail!("`nixdeploy check` is being built")
}
