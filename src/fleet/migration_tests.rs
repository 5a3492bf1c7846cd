//! Unit tests of the colmena and deploy-rs readers, from evaluated JSON (no nix needed).

use serde_json::{json, Value};

use super::*;
use crate::exit::{exit_for, Exit};
use crate::fleet::testing::drv;

fn load(source: &str, value: Value) -> anyhow::Result<Inventory> {
    Inventory::from_json(
        "path:/flake",
        json!({ "root": "/nix/store/source", "source": source, "value": value }),
    )
}

fn error(source: &str, value: Value) -> String {
    let err = load(source, value).expect_err("the inventory should be rejected");
    assert_eq!(exit_for(&err), Exit::Input, "{err}");
    err.to_string()
}

/// A node as `inventory.nix` extracts it from a makeHive result.
fn node(deployment: Value, name: &str) -> Value {
    json!({ "deployment": deployment, "toplevel": drv(name) })
}

#[test]
fn colmena_nodes_become_hosts_with_their_deployment_settings() {
    let inv = load(
        "colmenaHive",
        json!({
            "nodes": {
                "web-1": node(json!({
                    "targetHost": "10.0.0.1", "targetPort": 2222, "targetUser": "root",
                    "tags": ["web"], "buildOnTarget": true, "substituteOnDestination": true,
                    "sshOptions": ["-v"], "allowLocalDeployment": false,
                    "privilegeEscalationCommand": ["sudo", "-H", "--"],
                    "replaceUnknownProfiles": true,
                    "keys": { "token": { "name": "token", "text": "s3cret", "keyFile": null,
                        "keyCommand": null, "destDir": "/run/keys", "path": "/run/keys/token",
                        "user": "root", "group": "root", "permissions": "0600",
                        "uploadAt": "pre-activation" } },
                }), "web-1"),
                "db-1": node(json!({ "targetHost": "db", "targetUser": "deploy",
                    "privilegeEscalationCommand": ["doas"] }), "db-1"),
            },
            "meta": { "allowApplyAll": false, "name": "hive" },
        }),
    )
    .unwrap();
    assert!(!inv.allow_apply_all);
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    let web = inv.get("web-1").unwrap();
    assert_eq!(web.target_host, "10.0.0.1");
    assert_eq!(web.target_port, Some(2222));
    assert_eq!(web.tags, ["web"]);
    assert_eq!(web.build_on, BuildOn::Target);
    assert_eq!(web.substitute, Some(true));
    assert_eq!(web.ssh_options, ["-v"]);
    assert!(web.escalation.is_none(), "root needs no escalation");
    assert_eq!(
        web.keys["token"],
        json!({ "name": "token", "text": "s3cret", "destDir": "/run/keys", "user": "root",
                "group": "root", "permissions": "0600", "uploadAt": "pre-activation" })
    );
    crate::keys::check_hosts(std::slice::from_ref(web)).expect("colmena keys are valid key specs");
    let db = inv.get("db-1").unwrap();
    assert_eq!(db.target_user.as_deref(), Some("deploy"));
    assert_eq!(db.escalation.argv, ["doas"]);
    assert_eq!(db.substitute, Some(false), "colmena's default");
}

#[test]
fn colmena_fields_nixdeploy_does_not_follow_are_warnings() {
    let inv = load(
        "colmenaHive",
        json!({
            "nodes": { "a": node(json!({ "replaceUnknownProfiles": false, "futureOption": 1 }), "a") },
            "meta": { "machinesFile": "/etc/machines" },
        }),
    )
    .unwrap();
    let all = inv.warnings.join("\n");
    assert!(
        all.contains("replaceUnknownProfiles = false is not checked"),
        "{all}"
    );
    assert!(
        all.contains("deployment.futureOption is not a field nixdeploy knows"),
        "{all}"
    );
    assert!(
        all.contains("machinesFile '/etc/machines' is not used"),
        "{all}"
    );
}

#[test]
fn colmena_local_deployment_targets_this_machine_or_none() {
    let inv = load(
        "colmenaHive",
        json!({ "nodes": {
            "here": node(json!({ "targetHost": null, "allowLocalDeployment": true }), "here"),
            "lo": node(json!({ "targetHost": "localhost", "allowLocalDeployment": true }), "lo"),
            "far": node(json!({ "targetHost": "far.example", "allowLocalDeployment": true }), "far"),
        }}),
    )
    .unwrap();
    assert!(
        inv.get("here").unwrap().local,
        "no ssh target: deployed here"
    );
    assert!(
        inv.get("lo").unwrap().local,
        "a target of this machine: deployed here"
    );
    assert!(!inv.get("far").unwrap().local, "another machine: over ssh");
    let err = error(
        "colmenaHive",
        json!({ "nodes": { "x": node(json!({ "targetHost": null }), "x") } }),
    );
    assert!(
        err.contains("targetHost is null and allowLocalDeployment is false"),
        "{err}"
    );
}

#[test]
fn a_raw_colmena_output_says_exactly_what_to_add() {
    let err = error("colmena", json!(["colmena", "nixosConfigurations"]));
    assert!(
        err.contains("add `colmenaHive = colmena.lib.makeHive self.colmena;`"),
        "{err}"
    );
}

fn deploy(nodes: Value) -> Value {
    json!({ "sshUser": "deploy", "sshOpts": ["-o", "A=1"], "nodes": nodes })
}

#[test]
fn deploy_rs_ssh_user_logs_in_and_user_is_escalated_to() {
    let inv = load(
        "deploy",
        deploy(json!({ "a": { "hostname": "a.example", "sshOpts": ["-o", "B=2"],
            "profiles": { "system": { "user": "root", "sshOpts": ["-o", "C=3"], "path": drv("a") } } } })),
    )
    .unwrap();
    let a = inv.get("a").unwrap();
    assert_eq!(a.target_user.as_deref(), Some("deploy"));
    assert_eq!(a.escalation.argv, ["sudo", "-H", "--"]);
    assert_eq!(
        a.ssh_options,
        ["-o", "A=1", "-o", "B=2", "-o", "C=3"],
        "sshOpts append, outermost first"
    );
    let inv = load(
        "deploy",
        deploy(json!({ "a": { "sudo": "doas -u", "profiles": { "system": { "path": drv("a"), "user": "root" } } } })),
    )
    .unwrap();
    assert_eq!(
        inv.get("a").unwrap().escalation.argv,
        ["doas", "-u", "root"]
    );
}

#[test]
fn deploy_rs_rollback_and_timeouts_become_activate_defaults() {
    let inv = load(
        "deploy",
        json!({ "magicRollback": true, "confirmTimeout": 60, "nodes": { "a": {
            "autoRollback": false, "activationTimeout": 300, "fastConnection": true,
            "profiles": { "system": { "magicRollback": false, "path": drv("a") } } } } }),
    )
    .unwrap();
    let a = inv.get("a").unwrap();
    assert_eq!(
        a.activate_defaults,
        ActivateDefaults {
            magic_rollback: Some(false),
            auto_rollback: Some(false),
            confirm_timeout: Some(60),
            activation_timeout: Some(300),
        }
    );
    assert_eq!(
        a.substitute,
        Some(false),
        "fastConnection copies everything"
    );
}

#[test]
fn deploy_rs_temp_path_and_interactive_sudo_are_warnings() {
    let inv = load(
        "deploy",
        json!({ "tempPath": "/var/tmp", "nodes": { "a": { "interactiveSudo": true,
            "profiles": { "system": { "path": drv("a") } } } } }),
    )
    .unwrap();
    let all = inv.warnings.join("\n");
    assert!(
        all.contains("deploy: tempPath '/var/tmp' is not used"),
        "{all}"
    );
    assert!(all.contains("deploy.nodes.a: interactiveSudo"), "{all}");
}

#[test]
fn deploy_rs_typos_are_errors_with_a_suggestion() {
    let err = error(
        "deploy",
        json!({ "nodes": { "a": { "sshUsr": "x", "profiles": { "system": { "path": drv("a") } } } } }),
    );
    assert!(
        err.starts_with("deploy.nodes.a: unknown field sshUsr (did you mean sshUser?)"),
        "{err}"
    );
    assert!(!err.contains("__nixosToplevel"), "{err}");
    let err = error(
        "deploy",
        json!({ "nodes": { "a": { "profiles": { "system": { "pth": drv("a") } } } } }),
    );
    assert!(
        err.contains("unknown field pth (did you mean path?)"),
        "{err}"
    );
}

#[test]
fn deploy_rs_profiles_keep_their_users_paths_and_order() {
    let inv = load(
        "deploy",
        json!({ "nodes": {
            "a": { "sshUser": "root", "profilesOrder": ["home", "system"], "profiles": {
                "system": { "path": drv("a") },
                "myapp": { "user": "app", "path": drv("myapp"), "magicRollback": false },
                "home": { "user": "alice", "path": drv("home-manager-generation") },
            } },
            "only-home": { "profiles": { "home": { "user": "alice", "path": drv("home-manager-generation") } } },
        }}),
    )
    .unwrap();
    let a = inv.get("a").unwrap();
    let names: Vec<&str> = a.profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["home", "myapp"]);
    assert_eq!(a.system_position, 1, "system after home, before myapp");
    let home = &a.profiles[0];
    assert_eq!(home.kind, ProfileKind::HomeManager);
    assert_eq!(home.user, "alice");
    assert_eq!(
        home.profile_path,
        "/nix/var/nix/profiles/per-user/alice/home"
    );
    assert_eq!(home.activate, "$PROFILE/deploy-rs-activate");
    assert_eq!(a.profiles[1].defaults.magic_rollback, Some(false));
    let only = inv.get("only-home").unwrap();
    assert!(!only.has_system, "a node without a system profile is valid");
    assert_eq!(only.profiles.len(), 1);
}

#[test]
fn deploy_rs_nixos_wrapper_deploys_the_toplevel_it_wraps() {
    let mut wrapper = drv("activatable-nixos-system-a");
    wrapper["wraps"] = json!("/nix/store/11111111111111111111111111111111-nixos-system-a");
    let inv = load(
        "deploy",
        json!({ "nodes": { "a": { "profiles": { "system": { "path": wrapper } } } } }),
    )
    .unwrap();
    let a = inv.get("a").unwrap();
    assert_eq!(
        a.out_path,
        "/nix/store/11111111111111111111111111111111-nixos-system-a"
    );
    assert!(a.drv_path.ends_with("activatable-nixos-system-a.drv"));
}

#[test]
fn native_profiles_store_paths_and_the_apply_all_guard() {
    let inv = load(
        "nixdeploy",
        json!({
            "defaults": { "allowApplyAll": false, "activate": { "magicRollback": false } },
            "hosts": { "h1": {
                "toplevel": "/nix/store/22222222222222222222222222222222-nixos-system-h1",
                "profilesOrder": ["myapp"],
                "profiles": { "myapp": { "path": drv("myapp"), "user": "app",
                    "command": "$PROFILE/bin/start", "activate": { "autoRollback": false } } },
            } },
        }),
    )
    .unwrap();
    assert!(!inv.allow_apply_all);
    let h1 = inv.get("h1").unwrap();
    assert!(h1.is_prebuilt());
    assert_eq!(h1.system_position, 1);
    assert_eq!(h1.activate_defaults.magic_rollback, Some(false));
    assert_eq!(h1.profiles[0].activate, "$PROFILE/bin/start");
    let err = error(
        "nixdeploy",
        json!({ "hosts": { "h1": { "toplevel": "not-a-path" } } }),
    );
    assert!(
        err.contains(
            "must be a derivation or a store path (/nix/store/<hash>-<name>), found the string"
        ),
        "{err}"
    );
    let err = error(
        "nixdeploy",
        json!({ "hosts": { "h1": { "toplevel": drv("h1"), "allowApplyAll": false } } }),
    );
    assert!(err.contains("set it in nixdeploy.defaults"), "{err}");
    let err = error(
        "nixdeploy",
        json!({ "hosts": { "h1": { "toplevel": drv("h1"), "profiles": { "x": { "path": drv("x") } } } } }),
    );
    assert!(err.contains("field command is missing"), "{err}");
}

#[test]
fn a_native_localhost_target_is_local_unless_it_has_a_port() {
    let inv = load(
        "nixdeploy",
        json!({ "hosts": {
            "here": { "toplevel": drv("here"), "targetHost": "localhost" },
            "vm": { "toplevel": drv("vm"), "targetHost": "127.0.0.1", "targetPort": 2222 },
            "forced": { "toplevel": drv("forced"), "targetHost": "localhost", "local": false },
        }}),
    )
    .unwrap();
    assert!(inv.get("here").unwrap().local);
    assert!(
        !inv.get("vm").unwrap().local,
        "a forwarded port is reached over ssh"
    );
    assert!(!inv.get("forced").unwrap().local, "local = false wins");
}
