//! Migrating unchanged: a colmena `makeHive` result and a deploy-rs `deploy` tree with several
//! profiles are deployed to real sandbox hosts with the stock runbooks; a prebuilt store path
//! is deployed as a toplevel; `allowApplyAll = false` refuses a run without `--on`; typos in
//! deploy-rs fields are errors with a suggestion.
//!
//! The fixtures are flakes generated next to the sandbox: they import the sandbox flake's own
//! toplevels (busybox builders, no nixpkgs) and wrap them the way colmena and deploy-rs do.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{skip_unless_root, unique_rev, Sandbox};

const APPLY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks/apply.rhai");

/// Writes a flake next to the sandbox whose `outputs` body is `outputs`, with these in scope:
/// `sandbox` (the sandbox flake's outputs), `fleet` (its fleet.json), `bb` (busybox),
/// `top` (a host's sandbox toplevel) and `mk` (a busybox derivation: name, script, env).
fn fixture(sb: &Sandbox, name: &str, outputs: &str) -> PathBuf {
    let dir = sb.dir().parent().unwrap().join(name);
    fs::create_dir_all(dir.join("bb/bin")).unwrap();
    let src = sb.dir().join("flake");
    for file in ["fleet.json", "switch-to-configuration.sh", "flake.lock"] {
        fs::copy(src.join(file), dir.join(file)).unwrap();
    }
    fs::copy(src.join("flake.nix"), dir.join("sandbox.nix")).unwrap();
    fs::copy(src.join("bb/bin/busybox"), dir.join("bb/bin/busybox")).unwrap();
    let flake = format!(
        r#"{{
  outputs = {{ self }}:
    let
      sandbox = (import ./sandbox.nix).outputs {{ inherit self; }};
      fleet = builtins.fromJSON (builtins.readFile ./fleet.json);
      bb = "${{./bb}}/bin/busybox";
      top = h: sandbox.nixosConfigurations.${{h}}.config.system.build.toplevel;
      mk = name: script: env: derivation ({{
        inherit name;
        system = "x86_64-linux";
        builder = bb;
        args = [ "sh" "-ec" ("bb=\"$builder\"\n" + script) ];
      }} // env);
    in
    {outputs};
}}
"#
    );
    fs::write(dir.join("flake.nix"), flake).unwrap();
    dir
}

fn flake_ref(dir: &Path) -> String {
    format!("path:{}", dir.display())
}

/// `nixdeploy run runbooks/apply.rhai --flake FLAKE` with the sandbox's state dir, not yet run.
fn apply(sb: &Sandbox, flake: &str) -> common::Run {
    sb.nixdeploy(&["run", APPLY, "--flake", flake])
}

/// The colmena fixture: exactly the attributes `colmena.lib.makeHive` returns that a deploy
/// reads, with every `deployment` option at the value the module system gives it. Reading
/// `meta.nixpkgs` would fail the evaluation.
const COLMENA: &str = r#"{
  colmenaHive = rec {
    __schema = "v0";
    meta = {
      allowApplyAll = false;
      name = "hive";
      description = "A Colmena Hive";
      nixpkgs = throw "nixdeploy must not evaluate meta.nixpkgs";
      nodeNixpkgs = { };
      nodeSpecialArgs = { };
      specialArgs = { };
      machinesFile = null;
    };
    nodes = builtins.mapAttrs (h: f: {
      config = {
        deployment = {
          targetHost = h;
          targetPort = 22;
          targetUser = "root";
          tags = f.tags ++ [ "colmena" ];
          keys."app-token" = {
            name = "app-token";
            text = "token-of-${h}";
            keyFile = null;
            keyCommand = null;
            destDir = "/run/keys";
            path = "/run/keys/app-token";
            user = "root";
            group = "root";
            permissions = "0640";
            uploadAt = "pre-activation";
          };
          buildOnTarget = false;
          substituteOnDestination = false;
          allowLocalDeployment = false;
          privilegeEscalationCommand = [ "sudo" "-H" "--" ];
          sshOptions = [ "-F" fleet.sshConfig ];
          replaceUnknownProfiles = true;
        };
        system.build.toplevel = top h;
      };
    }) fleet.hosts;
    toplevel = builtins.mapAttrs (_: n: n.config.system.build.toplevel) nodes;
    deploymentConfig = builtins.mapAttrs (_: n: n.config.deployment) nodes;
    introspect = f: f { };
  };
}"#;

#[test]
fn a_colmena_hive_deploys_with_apply_honouring_tags_keys_ports_and_allow_apply_all() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    sb.fresh_revs();
    let flake = flake_ref(&fixture(&sb, "colmena-fixture", COLMENA));

    let hosts = sb
        .nixdeploy(&["hosts", "--json", "--flake", &flake])
        .success()
        .json();
    for row in hosts.as_array().unwrap() {
        assert_eq!(row["target_port"], 22, "{row}");
        assert_eq!(row["target_user"], "root", "{row}");
    }

    let refused = apply(&sb, &flake).output();
    refused
        .assert_code(4)
        .assert_stderr_contains("allowApplyAll = false")
        .assert_stderr_contains("--on");
    assert!(
        sb.activations("h1").is_empty(),
        "the refused run touched h1"
    );

    apply(&sb, &flake).args(&["--on", "@web"]).success();
    for h in ["h1", "h3"] {
        sb.assert_runs_its_toplevel(h, "tagged web");
        let key = sb.host_root(h).join("run/keys/app-token");
        assert_eq!(fs::read_to_string(&key).unwrap(), format!("token-of-{h}"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }
    assert!(
        sb.activations("h2").is_empty(),
        "h2 is not tagged web and was left alone"
    );
}

#[test]
fn a_port_from_the_hive_is_the_port_ssh_uses() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let hive = COLMENA.replace("targetPort = 22;", "targetPort = 2;");
    let flake = flake_ref(&fixture(&sb, "colmena-port", &hive));
    let book = common::runbook(
        &sb,
        "probe.rhai",
        r#"let r = exec(hosts(), "true"); if !r.ok { throw r.failed; }"#,
    );
    let out = sb
        .nixdeploy(&["run"])
        .args(&[book.as_os_str()])
        .args(&["--flake", &flake, "--on", "h1"])
        .output();
    out.assert_failure();
    assert!(
        format!("{out}").contains("port 2"),
        "ssh was told port 2 and could not connect: {out}"
    );
}

#[test]
fn a_local_host_is_deployed_without_any_ssh_connection() {
    if !skip_unless_root() {
        return;
    }
    // nixdeploy runs inside h1's namespaces (its own /nix, /run and network), so "this
    // machine" is the sandbox host and the real machine's /run/current-system is never touched.
    let sb = Sandbox::up(1);
    sb.fresh_revs();
    let hive = COLMENA
        .replace("targetHost = h;", "targetHost = null;")
        .replace(
            "allowLocalDeployment = false;",
            "allowLocalDeployment = true;",
        )
        .replace("allowApplyAll = false;", "allowApplyAll = true;");
    let flake = flake_ref(&fixture(&sb, "colmena-local", &hive));
    let tmp = sb.dir().parent().unwrap();
    let fake = tmp.join("fake-bin");
    fs::create_dir_all(&fake).unwrap();
    let calls = tmp.join("ssh-calls");
    fs::write(
        fake.join("ssh"),
        format!("#!/bin/sh\necho \"$*\" >> {}\nexit 255\n", calls.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(fake.join("ssh"), fs::Permissions::from_mode(0o755)).unwrap();
    let pid = sb.sshd_pids()[0].to_string();
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap());
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-m", "-n", "-u", "--"])
        .arg(common::BIN)
        .args(["run", APPLY, "--flake", &flake])
        .env("PATH", path)
        .env("NIXDEPLOY_STATE_DIR", sb.state_dir())
        .env_remove("NIXDEPLOY_PATH")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !calls.exists(),
        "ssh was run: {:?}",
        fs::read_to_string(&calls)
    );
    sb.assert_runs_its_toplevel("h1", &text);
    assert_eq!(
        fs::read_to_string(sb.host_root("h1").join("run/keys/app-token")).unwrap(),
        "token-of-h1"
    );
    let states = sb.activation_states("h1");
    assert!(
        states.iter().any(|s| s == "confirmed"),
        "the watchdog was armed and confirmed: {states:?}"
    );
}

/// The deploy-rs fixture: every node has a system profile (deploy-rs's `activate.nixos`
/// wrapper around the sandbox toplevel), a home-manager-shaped profile for `nobody` and a
/// custom profile for `daemon`, deployed in `profilesOrder`. Each activation appends
/// "<user> <profile>" to /run/t/log on the host.
const DEPLOY_RS: &str = r#"let
    # What deploy-rs's activate.custom builds: a buildEnv named activatable-<base> holding the
    # base's entries and a deploy-rs-activate script (its activate-rs needs deploy-rs itself).
    activatable = base: activate: mk "activatable-${base.name}" ''
      "$bb" mkdir -p "$out"
      for f in "$base"/*; do "$bb" ln -s "$f" "$out/"; done
      printf '#!%s sh\nset -e\n%s\n' "$bb" "$activate" > "$out/deploy-rs-activate"
      "$bb" chmod 555 "$out/deploy-rs-activate"
    '' {
      inherit base activate;
      pkgs = builtins.toJSON [ { paths = [ base ]; priority = 5; } ];
    };
    logger = name: mk name ''
      "$bb" mkdir -p "$out"
      printf '#!%s sh\necho "$(%s id -un) %s" >> /run/t/log\n' "$bb" "$bb" "$what" > "$out/activate"
      "$bb" chmod 555 "$out/activate"
    '' { what = name; };
  in {
  deploy = {
    sshUser = "root";
    sshOpts = [ "-F" fleet.sshConfig ];
    magicRollback = false;
    nodes = builtins.mapAttrs (h: f: {
      hostname = h;
      profilesOrder = [ "home" "system" "myapp" ];
      profiles = {
        system = {
          user = "root";
          path = activatable (top h) "$PROFILE/bin/switch-to-configuration switch";
        };
        home = {
          user = "nobody";
          path = activatable (logger "home-manager-generation") "$PROFILE/activate";
        };
        myapp = {
          user = "daemon";
          path = activatable (logger "myapp") "$PROFILE/activate";
        };
      };
    }) fleet.hosts;
  };
}"#;

/// Gives `h` an empty `/run/t/log`, writable by every user, for the fixtures' activations.
fn empty_log(sb: &Sandbox, h: &str) {
    let out = sb.ssh(
        h,
        "mkdir -p /run/t && : > /run/t/log && chmod 666 /run/t/log",
    );
    assert!(out.status.success(), "{h}: {out:?}");
}

fn log_of(sb: &Sandbox, h: &str) -> Vec<String> {
    fs::read_to_string(sb.host_root(h).join("run/t/log"))
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[test]
fn deploy_rs_profiles_are_activated_as_their_users_in_order_and_a_redeploy_changes_nothing() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    sb.fresh_revs();
    let flake = flake_ref(&fixture(&sb, "deploy-rs-fixture", DEPLOY_RS));
    let hosts = ["h1", "h2", "h3"];
    for h in hosts {
        empty_log(&sb, h);
    }
    apply(&sb, &flake).success();
    for h in hosts {
        sb.assert_runs_its_toplevel(h, "the one the activate.nixos wrapper wraps");
        assert_eq!(
            log_of(&sb, h),
            ["nobody home-manager-generation", "daemon myapp"],
            "{h}: each profile ran once, as its user, in profilesOrder"
        );
        let home = sb
            .host_root(h)
            .join("nix/var/nix/profiles/per-user/nobody/home");
        assert!(
            fs::read_link(&home).is_ok(),
            "{h}: the home profile is a per-user profile"
        );
        let states = sb.activation_states(h);
        assert!(!states.is_empty(), "{h}: the system was activated");
        assert!(
            states.iter().all(|s| s == "done"),
            "{h}: magicRollback = false armed no watchdog: {states:?}"
        );
    }
    let stores: Vec<_> = hosts.iter().map(|h| sb.store_paths(h)).collect();
    let generations: Vec<_> = hosts.iter().map(|h| sb.profile_generations(h)).collect();
    apply(&sb, &flake).success();
    for (i, h) in hosts.iter().enumerate() {
        assert_eq!(sb.store_paths(h), stores[i], "{h}: nothing copied");
        assert_eq!(
            sb.profile_generations(h),
            generations[i],
            "{h}: no new generation"
        );
        assert_eq!(log_of(&sb, h).len(), 2, "{h}: no profile ran again");
    }
}

#[test]
fn a_typo_in_a_deploy_rs_node_is_an_error_with_a_suggestion() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let typo = DEPLOY_RS.replace("hostname = h;", "hostname = h; sshUsr = \"root\";");
    let flake = flake_ref(&fixture(&sb, "deploy-rs-typo", &typo));
    apply(&sb, &flake)
        .output()
        .assert_code(4)
        .assert_stderr_contains("deploy.nodes.h1: unknown field sshUsr (did you mean sshUser?)");
    assert!(sb.activations("h1").is_empty());
}

#[test]
fn a_prebuilt_store_path_toplevel_is_copied_and_activated_without_a_build() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    sb.fresh_revs();
    let path = sb.build_toplevel("h1");
    let outputs = format!(
        r#"{{ nixdeploy = {{
            sshConfig = fleet.sshConfig;
            nixOptions.substituters = "";
            hosts.h1.toplevel = "{path}";
          }}; }}"#
    );
    let flake = flake_ref(&fixture(&sb, "prebuilt", &outputs));
    let out = apply(&sb, &flake).args(&["--json"]).success();
    let build = out
        .json_lines()
        .into_iter()
        .find(|e| e["event"] == "step" && e["step"] == "build" && e["state"] != "started")
        .expect("a build step event");
    assert_eq!(build["state"], "skipped", "{build}");
    assert_eq!(sb.current_system("h1"), Some(path));
}

#[test]
fn a_specialisation_activates_and_an_unknown_one_fails_before_the_switch() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let rev = unique_rev();
    sb.edit_fleet(|v| {
        v["hosts"]["h1"]["rev"] = serde_json::json!(rev);
        v["hosts"]["h1"]["specialisations"] = serde_json::json!({ "alt": {} });
    });
    let toplevel = sb.build_toplevel("h1");
    let alt = fs::canonicalize(Path::new(&toplevel).join("specialisation/alt"))
        .unwrap()
        .display()
        .to_string();
    assert_ne!(alt, toplevel);
    apply(&sb, &sb.flake())
        .args(&["--set", "specialisation=alt"])
        .success();
    assert_eq!(
        sb.current_system("h1"),
        Some(alt.clone()),
        "h1 runs the specialisation"
    );
    let activations = sb.activations("h1");

    let out = apply(&sb, &sb.flake())
        .args(&["--set", "specialisation=atl"])
        .output();
    out.assert_code(1)
        .assert_stderr_contains("unknown specialisation 'atl'")
        .assert_stderr_contains("did you mean 'alt'?");
    assert_eq!(sb.current_system("h1"), Some(alt), "h1 still runs alt");
    assert_eq!(sb.activations("h1"), activations, "nothing was switched");
}

/// A deploy-rs node with no system profile, only `myapp` (run as root) whose activation runs
/// `script` with `$bb` set to busybox; every version appends its name to /run/t/log.
fn app_only(version: &str, script: &str) -> String {
    format!(
        r#"let
    activatable = base: activate: mk "activatable-${{base.name}}" ''
      "$bb" mkdir -p "$out"
      for f in "$base"/*; do "$bb" ln -s "$f" "$out/"; done
      printf '#!%s sh\nset -e\n%s\n' "$bb" "$activate" > "$out/deploy-rs-activate"
      "$bb" chmod 555 "$out/deploy-rs-activate"
    '' {{
      inherit base activate;
      pkgs = builtins.toJSON [ {{ paths = [ base ]; priority = 5; }} ];
    }};
    app = mk "myapp-{version}" ''
      "$bb" mkdir -p "$out"
      printf '#!%s sh\nbb=%s\necho {version} >> /run/t/log\n%s\n' "$bb" "$bb" "$script" > "$out/activate"
      "$bb" chmod 555 "$out/activate"
    '' {{ script = ''{script}''; }};
  in {{
  deploy = {{
    sshUser = "root";
    sshOpts = [ "-F" fleet.sshConfig ];
    confirmTimeout = 3;
    nodes.h1 = {{
      hostname = "h1";
      profiles.myapp = {{ user = "root"; path = activatable app "$PROFILE/activate"; }};
    }};
  }};
}}"#
    )
}

fn myapp_link(sb: &Sandbox) -> Option<String> {
    fs::canonicalize(sb.host_root("h1").join("nix/var/nix/profiles/myapp"))
        .ok()
        .map(|p| p.display().to_string())
}

#[test]
fn a_profile_whose_activation_fails_is_rolled_back_and_the_previous_one_reactivated() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    empty_log(&sb, "h1");
    let dir = fixture(&sb, "app-only", &app_only("v1", "true"));
    let flake = flake_ref(&dir);
    apply(&sb, &flake).success();
    let v1 = myapp_link(&sb).expect("the myapp profile is set");
    assert!(
        sb.activations("h1").is_empty(),
        "a node without system profile deploys no system"
    );

    fixture(&sb, "app-only", &app_only("v2", "exit 3"));
    let out = apply(&sb, &flake).output();
    out.assert_code(1)
        .assert_stderr_contains("profile myapp: activation as root failed, rolled back");
    assert_eq!(myapp_link(&sb), Some(v1), "the profile points at v1 again");
    assert_eq!(
        log_of(&sb, "h1"),
        ["v1", "v2", "v1"],
        "v1 was activated again"
    );
}

#[test]
fn a_profile_that_cuts_the_network_is_rolled_back_by_its_own_watchdog() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    empty_log(&sb, "h1");
    let dir = fixture(
        &sb,
        "app-cut",
        &app_only("v1", r#""$bb" ip link set eth0 up"#),
    );
    let flake = flake_ref(&dir);
    apply(&sb, &flake).success();
    let v1 = myapp_link(&sb).expect("the myapp profile is set");

    fixture(
        &sb,
        "app-cut",
        &app_only("v2", r#""$bb" ip link set eth0 down"#),
    );
    let out = apply(&sb, &flake).output();
    out.assert_failure();
    assert!(
        common::eventually(std::time::Duration::from_secs(30), || myapp_link(&sb)
            .as_deref()
            == Some(v1.as_str())),
        "the watchdog put the profile back on v1: {out}"
    );
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || sb
            .ssh("h1", "true")
            .status
            .success()),
        "re-activating v1 brought the network back"
    );
    assert_eq!(log_of(&sb, "h1"), ["v1", "v2", "v1"]);
}

// ---- bad inputs, without hosts: each is an input error (exit 4) before anything runs ----

/// A flake in a temp dir whose outputs are `outputs`, with `d name` a derivation that is only
/// ever instantiated.
fn bare_flake(outputs: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let flake = format!(
        "{{\n  outputs = {{ self }}:\n    let d = name: derivation {{ inherit name; system = \"x86_64-linux\"; builder = \"/bin/sh\"; args = [ \"-c\" \"echo > $out\" ]; }};\n    in {outputs};\n}}\n"
    );
    fs::write(dir.path().join("flake.nix"), flake).unwrap();
    dir
}

fn hosts_of(dir: &tempfile::TempDir) -> common::Outcome {
    common::nixdeploy(&["hosts", "--flake", &flake_ref(dir.path())]).output()
}

#[test]
fn a_raw_colmena_output_is_told_to_add_colmena_hive() {
    let dir = bare_flake(r#"{ colmena = { meta = { }; web = { }; }; }"#);
    hosts_of(&dir)
        .assert_code(4)
        .assert_stderr_contains("add `colmenaHive = colmena.lib.makeHive self.colmena;`");
}

#[test]
fn the_outputs_listed_for_a_flake_without_inventory_leave_out_flake_metadata() {
    let dir = bare_flake(r#"{ packages = { }; checks = { }; }"#);
    let out = hosts_of(&dir);
    out.assert_code(4)
        .assert_stderr_contains("(its outputs: checks, packages)");
    for meta in ["inputs", "lastModified", "narHash", "outPath", "sourceInfo"] {
        assert!(!format!("{out}").contains(meta), "{meta} listed: {out}");
    }
}

#[test]
fn a_deploy_rs_profiles_order_naming_an_unknown_profile_is_an_error_with_a_suggestion() {
    let dir = bare_flake(
        r#"{ deploy.nodes.web = { hostname = "web"; profilesOrder = [ "sytem" ];
             profiles.system.path = d "web"; }; }"#,
    );
    hosts_of(&dir).assert_code(4).assert_stderr_contains(
        "deploy.nodes.web: profilesOrder names unknown profile 'sytem' (did you mean 'system'?)",
    );
}

#[test]
fn a_deploy_rs_node_with_only_a_home_profile_leaves_the_others_deployable() {
    let dir = bare_flake(
        r#"{ deploy.nodes = {
             web = { hostname = "web"; profiles.system.path = d "web"; };
             desk = { hostname = "desk"; profiles.home = { user = "alice"; path = d "home-manager-generation"; }; };
           }; }"#,
    );
    let out = common::nixdeploy(&[
        "hosts",
        "--json",
        "--flake",
        &flake_ref(dir.path()),
        "--on",
        "web",
    ])
    .success();
    assert_eq!(out.json()[0]["name"], "web");
    let all = common::nixdeploy(&["hosts", "--json", "--flake", &flake_ref(dir.path())]).success();
    let desk = &all.json()[0];
    assert_eq!(desk["name"], "desk");
    assert_eq!(desk["has_system"], false);
    assert_eq!(desk["profiles"][0]["user"], "alice");
    assert_eq!(desk["profiles"][0]["kind"], "home-manager");
}

#[test]
fn activating_an_unknown_profile_is_an_error_before_any_host_is_contacted() {
    let dir = bare_flake(
        r#"{ deploy.nodes.web = { hostname = "192.0.2.1"; profiles.system.path = d "web";
             profiles.myapp = { user = "root"; path = d "myapp"; }; }; }"#,
    );
    let book = dir.path().join("book.rhai");
    fs::write(&book, r#"activate(hosts(), #{ profile: "myap" });"#).unwrap();
    let out = common::nixdeploy(&["run"])
        .args(&[book.as_os_str()])
        .args(&["--flake", &flake_ref(dir.path())])
        .output();
    out.assert_code(3)
        .assert_stderr_contains("unknown profile 'myap' (did you mean 'myapp'?)");
    assert!(!format!("{out}").contains("cannot reach"), "{out}");
}

/// A makeHive-shaped hive with one node whose `deployment` is `deployment`.
fn one_node_hive(deployment: &str) -> tempfile::TempDir {
    bare_flake(&format!(
        r#"{{ colmenaHive = {{ meta = {{ nixpkgs = throw "not read"; }};
             nodes.web-1.config = {{ deployment = {deployment};
               system.build.toplevel = d "web-1"; }}; }}; }}"#
    ))
}

#[test]
fn colmena_fields_of_the_wrong_shape_name_the_node_and_field() {
    let cases = [
        (
            r#"{ targetPort = 70000; }"#,
            "colmenaHive.nodes.web-1.config.deployment: field targetPort must be an integer from 1 to 65535",
        ),
        (
            r#"{ tags = [ "web,db" ]; }"#,
            "colmenaHive.nodes.web-1.config.deployment: field tags",
        ),
        (
            r#"{ targetHost = null; allowLocalDeployment = false; }"#,
            "targetHost is null and allowLocalDeployment is false",
        ),
        (
            r#"{ privilegeEscalationCommand = "sudo"; }"#,
            "field privilegeEscalationCommand must be a list of strings",
        ),
        (
            r#"{ keys.k = { text = "x"; permissions = "0999"; }; }"#,
            "host web-1: inventory key `k`",
        ),
    ];
    for (deployment, needle) in cases {
        let dir = one_node_hive(deployment);
        let book = dir.path().join("book.rhai");
        fs::write(&book, "build(hosts());").unwrap();
        common::nixdeploy(&["run"])
            .args(&[book.as_os_str()])
            .args(&["--flake", &flake_ref(dir.path())])
            .output()
            .assert_code(4)
            .assert_stderr_contains(needle);
    }
}

#[test]
fn native_profiles_are_deployed_in_order_with_the_system() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    sb.fresh_revs();
    empty_log(&sb, "h1");
    let outputs = r#"let
        logger = name: mk name ''
          "$bb" mkdir -p "$out/bin"
          printf '#!%s sh\necho "$(%s id -un) %s" >> /run/t/log\n' "$bb" "$bb" "$what" > "$out/activate"
          "$bb" cp "$out/activate" "$out/bin/start"
          "$bb" chmod 555 "$out/activate" "$out/bin/start"
        '' { what = name; };
      in {
      nixdeploy = {
        sshConfig = fleet.sshConfig;
        nixOptions.substituters = "";
        hosts.h1 = {
          toplevel = top "h1";
          profilesOrder = [ "home" "system" "app" ];
          profiles.home = { kind = "home-manager"; user = "nobody"; path = logger "home-manager-generation"; };
          profiles.app = { user = "daemon"; path = logger "app"; command = "$PROFILE/bin/start"; };
        };
      };
    }"#;
    let flake = flake_ref(&fixture(&sb, "native-profiles", outputs));
    let out = apply(&sb, &flake).args(&["--json"]).success();
    sb.assert_runs_its_toplevel("h1", "native profiles");
    assert_eq!(
        log_of(&sb, "h1"),
        ["nobody home-manager-generation", "daemon app"]
    );
    let activate = out
        .json_lines()
        .into_iter()
        .filter(|e| e["event"] == "step" && e["host"] == "h1" && e["state"] != "started")
        .map(|e| e["step"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    let at = |s: &str| activate.iter().position(|x| x == s).unwrap();
    assert!(
        at("activate-profiles") < at("activate"),
        "home (before the system) is activated first: {activate:?}"
    );
    assert!(
        activate
            .iter()
            .rposition(|x| x == "activate-profiles")
            .unwrap()
            > at("activate"),
        "app (after the system) is activated last: {activate:?}"
    );
}

#[test]
fn a_prebuilt_store_path_nobody_has_fails_that_host_at_copy_with_what_to_do() {
    if !skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let missing = "/nix/store/00000000000000000000000000000000-nixos-system-nowhere";
    let outputs = format!(
        r#"{{ nixdeploy = {{
            sshConfig = fleet.sshConfig;
            nixOptions.substituters = "";
            hosts.h1.toplevel = "{missing}";
          }}; }}"#
    );
    let flake = flake_ref(&fixture(&sb, "prebuilt-missing", &outputs));
    let out = apply(&sb, &flake).output();
    out.assert_code(1)
        .assert_stderr_contains("is not in this machine's store and h1 cannot substitute it")
        .assert_stderr_contains("build or fetch it here first");
    assert!(sb.activations("h1").is_empty(), "nothing was activated");
}
