//! Unit tests of the inventory schema, from evaluated JSON (no nix needed).

use serde_json::{json, Value};

use super::*;
use crate::exit::{exit_for, Exit};
use crate::fleet::testing::{drv, nixdeploy};

fn load(value: Value) -> anyhow::Result<Inventory> {
    Inventory::from_json("path:/flake", value)
}

fn error(value: Value) -> String {
    let err = load(value).expect_err("the inventory should be rejected");
    assert_eq!(exit_for(&err), Exit::Input, "{err}");
    err.to_string()
}

fn one_host(host: Value) -> Value {
    nixdeploy(json!({ "hosts": { "web-1": host } }))
}

#[test]
fn defaults_are_merged_under_every_host() {
    let inv = load(nixdeploy(json!({
        "defaults": { "targetUser": "root", "targetPort": 22, "tags": ["all"], "keys": { "a": { "text": "1" } } },
        "hosts": {
            "web-1": { "toplevel": drv("web-1"), "targetUser": "deploy", "keys": { "b": {} } },
            "web-2": { "toplevel": drv("web-2"), "tags": ["web"] },
        },
    })))
    .unwrap();
    let web1 = inv.get("web-1").unwrap();
    assert_eq!(web1.target_user.as_deref(), Some("deploy"));
    assert_eq!(web1.target_port, Some(22));
    assert_eq!(web1.tags, ["all"]);
    assert_eq!(web1.keys.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(inv.get("web-2").unwrap().tags, ["web"]);
}

#[test]
fn unset_fields_fall_back_to_the_documented_defaults() {
    let inv = load(one_host(json!({ "toplevel": drv("web-1") }))).unwrap();
    let host = inv.get("web-1").unwrap();
    assert_eq!(host.target_host, "web-1");
    assert_eq!(host.target_user, None);
    assert_eq!(host.target_port, None);
    assert_eq!(host.system, "x86_64-linux");
    assert_eq!(host.profile, "/nix/var/nix/profiles/system");
    assert_eq!(host.build_on, BuildOn::Local);
    assert!(host.drv_path.ends_with("-web-1.drv"));
}

#[test]
fn build_on_names_a_builder() {
    let inv = load(nixdeploy(json!({
        "builders": { "arm": { "host": "arm.example.com", "systems": ["aarch64-linux"], "maxJobs": 8 } },
        "hosts": {
            "a": { "toplevel": drv("a"), "buildOn": "arm" },
            "b": { "toplevel": drv("b"), "buildOn": "target" },
        },
    })))
    .unwrap();
    assert_eq!(
        inv.get("a").unwrap().build_on,
        BuildOn::Builder("arm".into())
    );
    assert_eq!(inv.get("b").unwrap().build_on, BuildOn::Target);
    let arm = &inv.builders["arm"];
    assert_eq!((arm.max_jobs, arm.speed_factor), (8, 1));
}

#[test]
fn ssh_config_resolves_against_the_flake_directory() {
    let inv = load(nixdeploy(json!({
        "sshConfig": "ssh/config",
        "hosts": { "a": { "toplevel": drv("a") } },
    })))
    .unwrap();
    assert_eq!(inv.ssh_config, Some(PathBuf::from("/flake/ssh/config")));
}

#[test]
fn wrong_field_types_name_host_and_field() {
    let cases = [
        (json!({ "tags": "web" }), "host web-1: field tags must be a list of strings, found a string"),
        (json!({ "targetPort": "22" }), "host web-1: field targetPort must be an integer from 1 to 65535, found a string"),
        (json!({ "targetPort": 0 }), "host web-1: field targetPort must be an integer from 1 to 65535, found 0 (out of range)"),
        (json!({ "buildOn": true }), "host web-1: field buildOn must be a string, found a boolean"),
        (json!({ "keys": ["a"] }), "host web-1: field keys must be an attribute set, found a list"),
        (json!({ "profile": "system" }), "host web-1: field profile must be an absolute path, found 'system'"),
        (json!({ "tags": ["a b"] }), "host web-1: field tags 'a b' contains ' '"),
    ];
    for (mut host, expected) in cases {
        host["toplevel"] = drv("web-1");
        let err = error(one_host(host));
        assert!(err.starts_with(expected), "{err}\nexpected: {expected}");
    }
}

#[test]
fn a_toplevel_that_is_not_a_derivation_is_rejected() {
    let err = error(one_host(json!({ "toplevel": 42 })));
    assert!(
        err.contains("host web-1: field toplevel must be a derivation"),
        "{err}"
    );
    assert!(err.ends_with("or a store path, found an integer"), "{err}");
    let err = error(one_host(json!({ "toplevel": "/nix/store/x" })));
    assert!(
        err.contains(
            "must be a derivation or a store path (/nix/store/<hash>-<name>), found the string"
        ),
        "{err}"
    );
}

#[test]
fn a_host_without_toplevel_or_nixos_configuration_is_rejected() {
    let err = error(one_host(json!({ "toplevel": null })));
    assert!(err.contains("host web-1: no toplevel"), "{err}");
    assert!(err.contains("nixosConfigurations.web-1"), "{err}");
}

#[test]
fn unknown_build_on_lists_the_builders() {
    let err = error(nixdeploy(json!({
        "builders": { "arm": { "host": "a", "systems": ["aarch64-linux"] } },
        "hosts": { "web-1": { "toplevel": drv("w"), "buildOn": "amr" } },
    })));
    assert!(
        err.contains("unknown builder 'amr' (did you mean 'arm'?)"),
        "{err}"
    );
    assert!(err.contains("known builders: arm"), "{err}");
}

#[test]
fn builders_need_host_and_systems() {
    let err = error(nixdeploy(json!({
        "builders": { "arm": { "systems": ["aarch64-linux"] } },
        "hosts": { "web-1": { "toplevel": drv("w") } },
    })));
    assert!(
        err.starts_with("builder arm: field host is missing"),
        "{err}"
    );
    let err = error(nixdeploy(json!({
        "builders": { "arm": { "host": "a", "systems": [] } },
        "hosts": { "web-1": { "toplevel": drv("w") } },
    })));
    assert!(
        err.starts_with("builder arm: field systems is missing"),
        "{err}"
    );
}

#[test]
fn invalid_and_case_colliding_names_are_rejected() {
    let err = error(nixdeploy(
        json!({ "hosts": { "root@web": { "toplevel": drv("w") } } }),
    ));
    assert!(err.starts_with("host root@web: invalid host name"), "{err}");
    let err = error(nixdeploy(json!({
        "hosts": { "Web-1": { "toplevel": drv("a") }, "web-1": { "toplevel": drv("b") } },
    })));
    assert!(
        err.contains("'Web-1' and 'web-1' differ only in case"),
        "{err}"
    );
}

#[test]
fn unknown_fields_and_misplaced_defaults_are_rejected() {
    let err = error(one_host(json!({ "toplevel": drv("w"), "tag": ["x"] })));
    assert!(
        err.contains("unknown field tag (did you mean tags?)"),
        "{err}"
    );
    let err = error(nixdeploy(json!({
        "defaults": { "targetHost": "x" },
        "hosts": { "web-1": { "toplevel": drv("w") } },
    })));
    assert!(
        err.starts_with("nixdeploy.defaults: field targetHost cannot be a default"),
        "{err}"
    );
}

#[test]
fn empty_inventories_are_rejected() {
    assert!(error(nixdeploy(json!({ "hosts": {} }))).contains("defines no hosts"));
    assert!(error(nixdeploy(json!({}))).contains("no hosts"));
    let err = error(json!({ "source": "none", "value": ["packages"] }));
    assert!(
        err.contains("has no nixdeploy, deploy, colmenaHive or nixosConfigurations output"),
        "{err}"
    );
}

#[test]
fn deploy_rs_nodes_become_hosts() {
    let inv = load(json!({ "source": "deploy", "value": {
        "sshUser": "admin",
        "nodes": {
            "a": { "hostname": "a.example.com", "sshOpts": ["-p", "2222"],
                   "profiles": { "system": { "user": "root", "path": drv("a") } } },
            "b": { "hostname": "b.example.com", "remoteBuild": true,
                   "profiles": { "system": { "sshUser": "root", "path": drv("b"), "profilePath": "/nix/var/nix/profiles/other" } } },
        },
    }}))
    .unwrap();
    let a = inv.get("a").unwrap();
    assert_eq!(a.target_host, "a.example.com");
    assert_eq!(a.target_user.as_deref(), Some("admin"));
    assert_eq!(a.ssh_options, ["-p", "2222"]);
    let b = inv.get("b").unwrap();
    assert_eq!(b.target_user.as_deref(), Some("root"));
    assert_eq!(b.profile, "/nix/var/nix/profiles/other");
    assert_eq!(b.build_on, BuildOn::Target);
}

#[test]
fn get_and_require_suggest_close_names() {
    let inv = crate::fleet::testing::inventory(&[("web-1", &[]), ("web-2", &[])]);
    assert!(inv.get("web-1").is_some());
    let err = inv.require("web-9").unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown host 'web-9' (did you mean 'web-1'?); known hosts: web-1, web-2"
    );
}
