//! End-to-end tests of the inventory, selectors and `nixdeploy hosts`, against real fixture
//! flakes evaluated by the real `nix`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A fixture flake (no inputs) in its own temporary directory.
struct Flake {
    dir: tempfile::TempDir,
}

impl Flake {
    /// A flake whose outputs are `outputs`; `d "name"` makes a derivation that is never built.
    fn new(outputs: &str) -> Flake {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{{\n  outputs = {{ self }}:\n    let d = name: derivation {{ inherit name; system = \"x86_64-linux\"; builder = \"/bin/sh\"; args = [ \"-c\" \"echo > $out\" ]; }};\n    in {outputs};\n}}\n"
        );
        std::fs::write(dir.path().join("flake.nix"), text).unwrap();
        Flake { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `nixdeploy hosts --flake <dir> <args>`.
    fn hosts(&self, args: &[&str]) -> Output {
        let flake = self.path().to_str().unwrap();
        nixdeploy(&[&["hosts", "--flake", flake], args].concat(), None)
    }

    /// `nixdeploy hosts --json`, parsed; the command must succeed.
    fn hosts_json(&self, args: &[&str]) -> Vec<Value> {
        let out = self.hosts(&[&["--json"], args].concat());
        assert_success(&out);
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// `name drv out` of every host `args` (`--on ...`) selects, from a runbook that prints
    /// them: the toplevel pass of a run, which evaluates the selected hosts and no others.
    fn evaluated(&self, args: &[&str]) -> Vec<Vec<String>> {
        let out = self.run(args);
        assert_success(&out);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
            .filter(|w| w.len() == 3 && w[1].ends_with(".drv"))
            .collect()
    }

    /// `nixdeploy run` of a runbook that prints each selected host's name, drv and out path.
    fn run(&self, args: &[&str]) -> Output {
        let book = self.path().join("print.rhai");
        std::fs::write(
            &book,
            "for h in hosts() { print(`${h.name} ${h.drv} ${h.toplevel}`); }\n",
        )
        .unwrap();
        let flake = self.path().to_str().unwrap();
        let run = [&["run", book.to_str().unwrap(), "--flake", flake], args].concat();
        nixdeploy(&run, None)
    }

    /// The command must fail with `code` and a message that contains every one of `needles`.
    fn fails(&self, args: &[&str], code: i32, needles: &[&str]) {
        assert_failure(&self.hosts(args), code, needles);
    }
}

fn nixdeploy(args: &[&str], cwd: Option<&Path>) -> Output {
    let state = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_nixdeploy"));
    command
        .args(args)
        .env("NIXDEPLOY_STATE_DIR", state.path())
        .env("NIX_CONFIG", "substituters =");
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    command.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_success(out: &Output) {
    assert!(out.status.success(), "failed: {}", stderr(out));
}

fn assert_failure(out: &Output, code: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    for needle in needles {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
}

fn names(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["name"].as_str().unwrap()).collect()
}

/// Three web hosts and a database, with a builder.
const FLEET: &str = r#"{
  nixdeploy = {
    defaults = { targetUser = "root"; };
    builders.arm = { host = "arm.example.com"; systems = [ "aarch64-linux" ]; maxJobs = 4; };
    hosts = {
      web-1 = { tags = [ "web" "canary" ]; toplevel = d "web-1"; targetPort = 2222; };
      web-2 = { tags = [ "web" ]; toplevel = d "web-2"; buildOn = "arm"; };
      web-3 = { tags = [ "web" ]; toplevel = d "web-3"; buildOn = "target"; targetHost = "10.0.0.3"; };
      db-1 = { tags = [ "db" ]; toplevel = d "db-1"; system = "aarch64-linux"; };
    };
  };
}"#;

#[test]
fn hosts_json_lists_tag_minus_excluded_name() {
    let rows = Flake::new(FLEET).hosts_json(&["--on", "@web, !web-3"]);
    assert_eq!(names(&rows), ["web-1", "web-2"]);
    let web1 = &rows[0];
    assert_eq!(web1["target_host"], "web-1");
    assert_eq!(web1["target_user"], "root");
    assert_eq!(web1["target_port"], 2222);
    assert_eq!(web1["tags"], serde_json::json!(["web", "canary"]));
    assert_eq!(web1["system"], "x86_64-linux");
    assert_eq!(web1["build_on"], "local");
    assert_eq!(web1["drv_path"], Value::Null, "hosts evaluates no toplevel");
    assert_eq!(web1["out_path"], Value::Null);
    assert_eq!(rows[1]["build_on"], "arm");
}

#[test]
fn hosts_without_selector_lists_every_host_in_name_order() {
    let rows = Flake::new(FLEET).hosts_json(&[]);
    assert_eq!(names(&rows), ["db-1", "web-1", "web-2", "web-3"]);
    assert_eq!(rows[0]["system"], "aarch64-linux");
    assert_eq!(rows[3]["build_on"], "target");
    assert_eq!(rows[3]["target_port"], Value::Null);
}

#[test]
fn hosts_table_shows_target_tags_system_and_build_location() {
    let out = Flake::new(FLEET).hosts(&["--on", "web-*"]);
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "TARGET", "TAGS", "SYSTEM", "BUILD"]);
    assert_eq!(
        lines[1],
        [
            "web-1",
            "root@web-1:2222",
            "web,canary",
            "x86_64-linux",
            "local"
        ]
    );
    assert_eq!(lines[2][4], "builder:arm");
    assert_eq!(lines[3][1], "root@10.0.0.3");
    assert_eq!(lines.len(), 4);
}

#[test]
fn evaluation_does_not_build_toplevels() {
    let flake = Flake::new(
        r#"{ nixdeploy.hosts.lazy-1.toplevel = d "nixdeploy-never-built-${toString builtins.currentTime}"; }"#,
    );
    let rows = flake.evaluated(&[]);
    let (drv_path, out_path) = (&rows[0][1], &rows[0][2]);
    assert!(Path::new(drv_path).exists(), "the .drv is instantiated");
    assert!(!Path::new(out_path).exists(), "{out_path} was built");
}

/// A fleet whose `broken` host throws as soon as its toplevel is evaluated.
const TRAP: &str = r#"{
  nixdeploy.hosts = {
    good = { tags = [ "ok" ]; toplevel = d "good"; };
    broken = { tags = [ "trap" ]; toplevel = throw "broken was evaluated"; };
  };
}"#;

#[test]
fn hosts_reads_every_host_without_evaluating_a_toplevel() {
    let rows = Flake::new(TRAP).hosts_json(&[]);
    assert_eq!(names(&rows), ["broken", "good"]);
    assert_eq!(rows[0]["tags"], serde_json::json!(["trap"]));
    assert!(rows.iter().all(|r| r["drv_path"].is_null()));
}

#[test]
fn a_run_evaluates_only_the_hosts_it_selects() {
    let rows = Flake::new(TRAP).evaluated(&["--on", "@ok"]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], "good");
    assert!(rows[0][1].ends_with("-good.drv"));
}

#[test]
fn deploy_rs_flake_is_read() {
    let flake = Flake::new(
        r#"{
          deploy = {
            sshUser = "admin";
            nodes.alpha = { hostname = "alpha.example.com"; sshOpts = [ "-p" "2200" ];
              profiles.system = { user = "root"; path = d "alpha"; }; };
            nodes.beta = { hostname = "beta.example.com";
              profiles.system = { sshUser = "root"; path = d "beta"; }; };
          };
          nixosConfigurations.ignored.config.system.build.toplevel = d "ignored";
        }"#,
    );
    let rows = flake.hosts_json(&[]);
    assert_eq!(names(&rows), ["alpha", "beta"]);
    assert_eq!(rows[0]["target_host"], "alpha.example.com");
    assert_eq!(rows[0]["target_user"], "admin");
    assert_eq!(rows[1]["target_user"], "root");
    assert!(flake.evaluated(&["--on", "beta"])[0][1].ends_with("-beta.drv"));
}

#[test]
fn nixos_configurations_only_flake_is_read() {
    let flake = Flake::new(
        r#"{
          nixosConfigurations.mail.config.system.build.toplevel = d "mail";
          nixosConfigurations.dns.config.system.build.toplevel = d "dns";
        }"#,
    );
    let rows = flake.hosts_json(&[]);
    assert_eq!(names(&rows), ["dns", "mail"]);
    assert_eq!(rows[1]["target_host"], "mail");
    assert_eq!(rows[1]["target_user"], Value::Null);
    assert_eq!(rows[1]["tags"], serde_json::json!([]));
    assert!(flake.evaluated(&["--on", "mail"])[0][1].ends_with("-mail.drv"));
}

#[test]
fn nixdeploy_host_without_toplevel_uses_its_nixos_configuration() {
    let flake = Flake::new(
        r#"{
          nixdeploy.hosts.mail = { tags = [ "mx" ]; };
          nixosConfigurations.mail.config.system.build.toplevel = d "mail-system";
          nixosConfigurations.unused.config.system.build.toplevel = throw "never evaluated";
        }"#,
    );
    let rows = flake.hosts_json(&["--on", "@mx"]);
    assert_eq!(names(&rows), ["mail"]);
    assert!(flake.evaluated(&["--on", "@mx"])[0][1].ends_with("-mail-system.drv"));
}

#[test]
fn relative_flake_reference_is_resolved_from_the_working_directory() {
    let flake = Flake::new(FLEET);
    let out = nixdeploy(&["hosts", "--json", "--on", "db-1"], Some(flake.path()));
    assert_success(&out);
    let parent = flake.path().parent().unwrap();
    let name = flake.path().file_name().unwrap().to_str().unwrap();
    let dir_ref = format!("./{name}");
    let out = nixdeploy(
        &["hosts", "--flake", &dir_ref, "--on", "db-1"],
        Some(parent),
    );
    assert_success(&out);
}

#[test]
fn flake_in_a_git_work_tree_is_read_through_git() {
    let flake = Flake::new(r#"{ nixdeploy.hosts.g-1.toplevel = d "g-1"; }"#);
    let repo = flake.path();
    let sub = repo.join("deploy");
    std::fs::create_dir(&sub).unwrap();
    std::fs::rename(repo.join("flake.nix"), sub.join("flake.nix")).unwrap();
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(repo)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    // Untracked files are invisible to nix in a git work tree, as with the nix CLI.
    let out = nixdeploy(&["hosts", "--flake", sub.to_str().unwrap()], None);
    assert_failure(&out, 4, &["git add"]);
    git(&["add", "deploy/flake.nix"]);
    let out = nixdeploy(&["hosts", "--flake", sub.to_str().unwrap()], None);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("g-1"));
}

#[test]
fn relative_ssh_config_must_exist_next_to_the_flake() {
    let outputs = r#"{ nixdeploy = { sshConfig = "ssh_config"; hosts.a.toplevel = d "a"; }; }"#;
    let flake = Flake::new(outputs);
    flake.fails(&[], 4, &["field sshConfig", "ssh_config", "does not exist"]);
    std::fs::write(flake.path().join("ssh_config"), "Host a\n").unwrap();
    assert_success(&flake.hosts(&[]));
}

// ---- malformed selectors ----

#[test]
fn selector_with_empty_item_is_rejected_with_its_column() {
    Flake::new(FLEET).fails(&["--on", "web-1,,web-2"], 4, &["at column 7", "empty item"]);
}

#[test]
fn selector_with_trailing_comma_is_rejected() {
    Flake::new(FLEET).fails(&["--on", "web-1,"], 4, &["at column 7", "trailing ','"]);
}

#[test]
fn selector_with_lone_at_or_bang_is_rejected() {
    let flake = Flake::new(FLEET);
    flake.fails(
        &["--on", "@"],
        4,
        &["column 1", "'@' must be followed by a tag"],
    );
    flake.fails(
        &["--on", "web-1,!"],
        4,
        &["column 7", "'!' must be followed"],
    );
}

#[test]
fn selector_with_double_exclusion_is_rejected() {
    Flake::new(FLEET).fails(&["--on", "!!web-1"], 4, &["column 2", "'!!'"]);
}

#[test]
fn selector_with_invalid_characters_is_rejected() {
    let flake = Flake::new(FLEET);
    flake.fails(
        &["--on", "web 1"],
        4,
        &["column 4", "whitespace inside an item"],
    );
    flake.fails(
        &["--on", "web/1"],
        4,
        &["column 4", "invalid character '/'"],
    );
    flake.fails(
        &["--on", "web-1;db-1"],
        4,
        &["column 6", "invalid character ';'"],
    );
}

#[test]
fn selector_with_unbalanced_bracket_is_rejected() {
    Flake::new(FLEET).fails(
        &["--on", "web-[12"],
        4,
        &["column 5", "'[' is never closed"],
    );
}

#[test]
fn empty_selector_is_rejected() {
    Flake::new(FLEET).fails(&["--on", ""], 4, &["column 1", "selector is empty"]);
}

#[test]
fn selector_naming_unknown_host_suggests_known_hosts() {
    Flake::new(FLEET).fails(
        &["--on", "web-9"],
        4,
        &[
            "unknown host 'web-9'",
            "did you mean 'web-1'",
            "known hosts: db-1, web-1, web-2, web-3",
        ],
    );
}

#[test]
fn selector_with_unknown_tag_lists_known_tags() {
    Flake::new(FLEET).fails(
        &["--on", "@dbs"],
        4,
        &["unknown tag 'dbs'", "known tags: canary, db, web"],
    );
}

#[test]
fn selector_glob_matching_no_host_is_rejected() {
    Flake::new(FLEET).fails(&["--on", "mail-*"], 4, &["'mail-*' matches no host"]);
}

// ---- malformed inventories ----

#[test]
fn missing_flake_directory_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("nope");
    let out = nixdeploy(&["hosts", "--flake", missing.to_str().unwrap()], None);
    assert_failure(&out, 4, &["nope", "cannot be read"]);
}

#[test]
fn directory_without_flake_nix_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = nixdeploy(&["hosts", "--flake", dir.path().to_str().unwrap()], None);
    assert_failure(&out, 4, &["has no flake.nix"]);
}

#[test]
fn nix_evaluation_error_shows_nix_message_and_the_host() {
    let flake = Flake::new(r#"{ nixdeploy.hosts.web-1.toplevel = throw "web-1 is not ready"; }"#);
    let position = format!(
        "(at {}/flake.nix:",
        flake.path().canonicalize().unwrap().display()
    );
    // The host fails (exit 1), with Nix's message, where and in which field.
    let out = flake.run(&[]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    for needle in [
        "failed to evaluate",
        "host web-1, field toplevel",
        "web-1 is not ready",
        &position,
    ] {
        assert!(text.contains(needle), "missing {needle:?} in: {text}");
    }
    // An error in the metadata every host needs stops the run before any host.
    Flake::new(r#"{ nixdeploy.hosts.web-1 = { toplevel = d "w"; tags = throw "no tags"; }; }"#)
        .fails(
            &[],
            4,
            &[
                "failed to evaluate the inventory",
                "host web-1, field tags",
                "no tags",
            ],
        );
}

#[test]
fn tags_that_are_not_a_list_are_rejected() {
    Flake::new(r#"{ nixdeploy.hosts.web-1 = { toplevel = d "w"; tags = "web"; }; }"#).fails(
        &[],
        4,
        &["host web-1: field tags must be a list of strings, found a string"],
    );
}

#[test]
fn target_port_out_of_range_is_rejected() {
    Flake::new(r#"{ nixdeploy.hosts.web-1 = { toplevel = d "w"; targetPort = 70000; }; }"#).fails(
        &[],
        4,
        &["host web-1: field targetPort must be an integer from 1 to 65535, found 70000"],
    );
}

#[test]
fn default_target_port_of_wrong_type_names_the_defaults() {
    Flake::new(r#"{ nixdeploy = { defaults.targetPort = "22"; hosts.web-1.toplevel = d "w"; }; }"#)
        .fails(
            &[],
            4,
            &[
                "nixdeploy.defaults: field targetPort must be an integer",
                "found a string",
            ],
        );
}

#[test]
fn build_on_that_is_not_a_string_is_rejected() {
    Flake::new(r#"{ nixdeploy.hosts.web-1 = { toplevel = d "w"; buildOn = [ "arm" ]; }; }"#).fails(
        &[],
        4,
        &["host web-1: field buildOn must be a string, found a list"],
    );
}

#[test]
fn unknown_build_on_builder_lists_the_builders() {
    Flake::new(
        r#"{ nixdeploy = { builders.arm = { host = "a"; systems = [ "aarch64-linux" ]; };
             hosts.web-1 = { toplevel = d "w"; buildOn = "x86"; }; }; }"#,
    )
    .fails(
        &[],
        4,
        &[
            "host web-1: field buildOn names unknown builder 'x86'",
            "known builders: arm",
        ],
    );
}

#[test]
fn builder_without_host_or_systems_is_rejected() {
    let host_missing = r#"{ nixdeploy = { builders.arm.systems = [ "aarch64-linux" ]; hosts.w.toplevel = d "w"; }; }"#;
    Flake::new(host_missing).fails(&[], 4, &["builder arm: field host is missing"]);
    let systems_missing =
        r#"{ nixdeploy = { builders.arm.host = "a"; hosts.w.toplevel = d "w"; }; }"#;
    Flake::new(systems_missing).fails(&[], 4, &["builder arm: field systems is missing"]);
}

#[test]
fn invalid_host_name_is_rejected() {
    Flake::new(r#"{ nixdeploy.hosts."web,1".toplevel = d "w"; }"#).fails(
        &[],
        4,
        &["host web,1: invalid host name", "','"],
    );
}

#[test]
fn host_names_differing_only_in_case_are_rejected() {
    Flake::new(r#"{ nixdeploy.hosts = { Web-1.toplevel = d "a"; web-1.toplevel = d "b"; }; }"#)
        .fails(&[], 4, &["'Web-1' and 'web-1' differ only in case"]);
}

#[test]
fn toplevel_that_is_not_a_derivation_is_rejected() {
    let out = Flake::new(r#"{ nixdeploy.hosts.web-1.toplevel = x: x; }"#).run(&[]);
    assert_failure(
        &out,
        4,
        &[
            "host web-1: field toplevel must be a derivation",
            "found a function",
        ],
    );
}

#[test]
fn host_without_toplevel_or_nixos_configuration_is_rejected() {
    Flake::new(r#"{ nixdeploy.hosts.web-1.tags = [ "web" ]; }"#).fails(
        &[],
        4,
        &["host web-1: no toplevel", "nixosConfigurations.web-1"],
    );
}

#[test]
fn unknown_host_field_is_rejected_with_a_suggestion() {
    Flake::new(r#"{ nixdeploy.hosts.web-1 = { toplevel = d "w"; targetPrt = 22; }; }"#).fails(
        &[],
        4,
        &["host web-1: unknown field targetPrt (did you mean targetPort?)"],
    );
}

#[test]
fn empty_inventory_is_rejected() {
    Flake::new(r#"{ nixdeploy.hosts = { }; }"#).fails(&[], 4, &["defines no hosts"]);
}

#[test]
fn flake_without_any_inventory_output_is_rejected() {
    Flake::new(r#"{ packages = { }; }"#).fails(
        &[],
        4,
        &[
            "has no nixdeploy, deploy, colmenaHive or nixosConfigurations output",
            "packages",
        ],
    );
}

// ---- malformed flags ----

#[test]
fn unknown_flag_is_a_usage_error() {
    Flake::new(FLEET).fails(&["--tag", "web"], 2, &["--tag"]);
}

#[test]
fn on_without_a_value_is_a_usage_error() {
    Flake::new(FLEET).fails(&["--on"], 2, &["--on"]);
}
