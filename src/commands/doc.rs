//! `nixdeploy doc`.

use std::path::Path;

use crate::exit::Exit;

/// Writes the API reference.
pub fn run(_out: &Path) -> anyhow::Result<Exit> {
    anyhow::bail!("`nixdeploy doc` is being built")
}
