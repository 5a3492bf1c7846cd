//! `nixdeploy doctor`: checks the deploying machine, then every selected host in parallel, and
//! says for each problem how to fix it. Read-only: it never changes a host.

use crate::doctor::{self, Check, Report};
use crate::exit::{Exit, Failure};
use crate::fleet::Inventory;

/// What `doctor` was asked.
pub struct Options {
    /// The flake holding the inventory.
    pub flake: String,
    /// Only these hosts.
    pub on: Option<String>,
    /// Print the report as JSON.
    pub json: bool,
}

/// Runs every check and prints the report; exit 1 when any check failed.
pub fn run(opts: Options) -> anyhow::Result<Exit> {
    let mut checks = doctor::check_deployer();
    let nix_ok = checks
        .iter()
        .all(|c| c.check != "nix.version" || c.status == doctor::Status::Ok);
    if nix_ok {
        match Inventory::load(&opts.flake) {
            Ok(inventory) => {
                let hosts = inventory.select(opts.on.as_deref())?;
                checks.push(Check::ok(
                    None,
                    "inventory",
                    format!("{} evaluates: {} host(s) selected", opts.flake, hosts.len()),
                ));
                let runtime = tokio::runtime::Runtime::new()
                    .map_err(|e| Failure::input(format!("cannot start the async runtime: {e}")))?;
                checks.extend(runtime.block_on(doctor::check_hosts(&inventory, &hosts)));
            }
            Err(err) => checks.push(Check::fail(
                None,
                "inventory",
                format!("{err:#}"),
                "fix the inventory as the message says (docs/flake-schema.md); no host can be checked until it evaluates",
            )),
        }
    }
    let report = Report::new(checks);
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.ok {
        Exit::Success
    } else {
        Exit::HostsFailed
    })
}
