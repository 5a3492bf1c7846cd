//! `nixdeploy sandbox`: bring up, inspect and remove disposable local SSH targets.

use std::path::PathBuf;

use crate::exit::Exit;
use crate::sandbox::{Sandbox, UpOptions};

fn open(dir: Option<PathBuf>) -> anyhow::Result<Sandbox> {
    Sandbox::open(dir.unwrap_or_else(Sandbox::default_dir))
}

/// `sandbox up`: bring up (or complete) the sandbox and print its status.
pub fn up(
    dir: Option<PathBuf>,
    hosts: usize,
    builders: usize,
    size_kib: u64,
) -> anyhow::Result<Exit> {
    let sandbox = open(dir)?;
    let status = sandbox.up(&UpOptions {
        hosts,
        builders,
        size_kib,
    })?;
    print!("{}", status.render());
    Ok(Exit::Success)
}

/// `sandbox status`: print the hosts and whether each answers (JSON with `--json`).
pub fn status(dir: Option<PathBuf>, json: bool) -> anyhow::Result<Exit> {
    let status = open(dir)?.status()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(Exit::Success)
}

/// `sandbox fault`: break one host on purpose.
pub fn fault(dir: Option<PathBuf>, host: &str, fault: &str) -> anyhow::Result<Exit> {
    let fault = crate::sandbox::fault::Fault::parse(fault)?;
    open(dir)?.fault(host, fault)?;
    Ok(Exit::Success)
}

/// `sandbox down`: remove everything the sandbox created.
pub fn down(dir: Option<PathBuf>) -> anyhow::Result<Exit> {
    let sandbox = open(dir)?;
    if sandbox.down()? {
        println!("removed sandbox {}", sandbox.dir().display());
    } else {
        println!("no sandbox in {}", sandbox.dir().display());
    }
    Ok(Exit::Success)
}

/// `sandbox reboot HOST`: simulate a reboot of one host.
pub fn reboot(dir: Option<PathBuf>, host: &str) -> anyhow::Result<Exit> {
    let sandbox = open(dir)?;
    crate::sandbox::preflight()?;
    let pid = sandbox.reboot(host)?;
    println!("rebooted {host} (sshd pid {pid})");
    Ok(Exit::Success)
}
