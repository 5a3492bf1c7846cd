//! `nixdeploy doc`: write the API and stdlib reference and the `.d.rhai` definitions.

use std::path::Path;

use anyhow::Context as _;

use crate::engine::docs;
use crate::engine::Session;
use crate::exit::Exit;

/// Writes the API reference.
pub fn run(out: &Path) -> anyhow::Result<Exit> {
    let session = Session::new(None, rhai::Map::new(), Vec::new(), Default::default());
    let engine = session.engine();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let files = [
        ("api.md", docs::api_markdown(engine)),
        ("stdlib.md", docs::stdlib_markdown()),
        ("nixdeploy.d.rhai", docs::definitions(engine)),
    ];
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(Exit::Success)
}
