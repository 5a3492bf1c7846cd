//! `nixdeploy disconnect`: ends the ssh masters that earlier runs kept open (`--persist`).

use crate::exit::{Exit, Failure};

/// Ends every persisted master and says how many there were.
pub fn run() -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::input(format!("cannot start the async runtime: {e}")))?;
    let ended = runtime.block_on(crate::transport::disconnect_all())?;
    println!("ended {ended} persisted connection(s)");
    Ok(Exit::Success)
}
