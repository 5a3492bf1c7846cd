//! Where nixdeploy keeps its state on the deploying machine (journal, REPL history, sandboxes).

use std::path::PathBuf;

/// `$XDG_STATE_HOME/nixdeploy`, else `~/.local/state/nixdeploy`, else `/tmp/nixdeploy-state`.
/// `NIXDEPLOY_STATE_DIR` overrides all of them (tests use it to stay isolated).
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NIXDEPLOY_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("nixdeploy");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/state/nixdeploy");
    }
    PathBuf::from("/tmp/nixdeploy-state")
}
