//! `nixdeploy runbooks`: the runbooks shipped inside the binary, what each does and its parameters.

use crate::exit::{Exit, Failure};

use super::shipped::{summary, RUNBOOKS};

/// The listing: one block per shipped runbook.
pub fn listing() -> String {
    let mut out = String::from(
        "Shipped runbooks (`nixdeploy run NAME` uses one when no file NAME exists; a file path always wins):\n",
    );
    for (name, text) in RUNBOOKS {
        out.push_str(&format!("  {name:<8} {}\n", summary(text)));
        if let Ok(params) = crate::engine::params::declared(name, text) {
            for p in params {
                out.push_str(&format!("           --set {}=…  {}\n", p.name, p.help));
            }
        }
    }
    out
}

/// Prints the listing, or with `show`, one runbook's source (to copy and adapt).
pub fn run(show: Option<&str>) -> anyhow::Result<Exit> {
    match show {
        None => print!("{}", listing()),
        Some(name) => {
            let book = super::shipped::shipped(name).ok_or_else(|| {
                Failure::input(format!(
                    "no shipped runbook `{name}`; shipped runbooks: {}",
                    super::shipped::names().join(", ")
                ))
            })?;
            print!("{}", book.text);
        }
    }
    Ok(Exit::Success)
}
