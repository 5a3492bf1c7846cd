//! `nixdeploy log`.

use crate::exit::Exit;

/// Shows the journal.
pub fn run(_host: Option<&str>, _on: Option<&str>, _json: bool) -> anyhow::Result<Exit> {
    anyhow::bail!("`nixdeploy log` is being built")
}
