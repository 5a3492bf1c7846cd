//! `nixdeploy hosts`.

use crate::exit::Exit;

/// Lists the selected hosts.
pub fn run(_flake: &str, _on: Option<&str>, _json: bool) -> anyhow::Result<Exit> {
    anyhow::bail!("`nixdeploy hosts` is being built")
}
