//! `nixdeploy sandbox`.

use std::path::PathBuf;

use crate::exit::Exit;

/// `sandbox up`.
pub fn up(
    _dir: Option<PathBuf>,
    _hosts: usize,
    _builders: usize,
    _size_kib: u64,
) -> anyhow::Result<Exit> {
    anyhow::bail!("`nixdeploy sandbox` is being built")
}

/// `sandbox status`.
pub fn status(_dir: Option<PathBuf>, _json: bool) -> anyhow::Result<Exit> {
    anyhow::bail!("`nixdeploy sandbox` is being built")
}

/// `sandbox down`.
pub fn down(_dir: Option<PathBuf>) -> anyhow::Result<Exit> {
    anyhow::bail!("`nixdeploy sandbox` is being built")
}
