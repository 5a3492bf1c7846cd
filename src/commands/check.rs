//! `nixdeploy check`: compile runbooks (files, or shipped ones by name) and their libraries,
//! report errors, which runbook was checked and where imports came from.

use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::docs::check_runbook;
use crate::engine::Session;
use crate::exit::Exit;
use crate::fleet::Inventory;

/// Compiles runbooks without contacting hosts.
pub fn run(runbooks: &[PathBuf], lib: &[PathBuf], flake: Option<&str>) -> anyhow::Result<Exit> {
    // The inventory is only read for its flake inputs; no host is contacted.
    let flake_inputs = match flake {
        Some(f) => Arc::new(Inventory::load(f)?).flake_inputs.clone(),
        None => Default::default(),
    };
    let mut exit = Exit::Success;
    for runbook in runbooks {
        let book = super::shipped::load(runbook)?;
        let (source, text) = (book.source.clone(), book.text.clone());
        println!("{}: checking {}", runbook.display(), book.describe());
        let mut session = Session::new(None, rhai::Map::new(), lib.to_vec(), flake_inputs.clone());
        book.mark(session.resolver());
        let (problems, imports) = check_runbook(&mut session, &source, &text);
        for note in &imports {
            let shadows = if note.shadowed.is_empty() {
                String::new()
            } else {
                format!(" (shadows {})", note.shadowed.join(", "))
            };
            println!("{source}: `{}` → {}{shadows}", note.name, note.winner);
        }
        for p in &problems {
            eprintln!("{}\n", p.rendered);
        }
        if problems.is_empty() {
            println!("{source}: ok");
        } else {
            println!("{source}: {} problem(s)", problems.len());
            exit = Exit::Runbook;
        }
    }
    Ok(exit)
}
