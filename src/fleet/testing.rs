//! Test helpers: evaluated-inventory JSON and inventories built from it, without nix.

use serde_json::{json, Value};

use super::Inventory;

/// A toplevel marker as `inventory.nix` emits it.
pub fn drv(name: &str) -> Value {
    json!({
        "__nixdeploy": "derivation",
        "drv": format!("/nix/store/00000000000000000000000000000000-{name}.drv"),
        "out": format!("/nix/store/00000000000000000000000000000000-{name}"),
        "system": "x86_64-linux",
    })
}

/// The evaluation result for a `nixdeploy` output.
pub fn nixdeploy(value: Value) -> Value {
    json!({ "root": "/nix/store/source", "source": "nixdeploy", "value": value })
}

/// An inventory of hosts with tags, each with its own toplevel.
pub fn inventory(hosts: &[(&str, &[&str])]) -> Inventory {
    let hosts: serde_json::Map<String, Value> = hosts
        .iter()
        .map(|(name, tags)| {
            (
                name.to_string(),
                json!({ "tags": tags, "toplevel": drv(name) }),
            )
        })
        .collect();
    Inventory::from_json("path:/flake", nixdeploy(json!({ "hosts": hosts }))).unwrap()
}
