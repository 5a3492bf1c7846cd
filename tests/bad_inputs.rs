//! The bad-input catalogue: every case is an input a user could really give (a runbook, an
//! inventory, a selector, a flag, a key spec, a `--set` parameter, the environment), the exit
//! code `docs/exit-codes.md` documents for it, and a message fragment that says where the
//! problem is (`file:line:col` for runbooks, the field path for inventories). No case touches a
//! host: every inventory host points at a local TCP listener that counts connections, and the
//! count must stay zero (a final control run proves the listener would notice).

use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A derivation helper every fixture flake shares; `d "x"` is never built by these cases.
const FLAKE_HEAD: &str = r#"{
  outputs = { self }: let
    d = n: derivation { name = "nixos-system-${n}"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "exit 1" ]; };
    host = n: tags: { targetHost = "127.0.0.1"; targetPort = PORT; inherit tags; toplevel = d n; };
  in "#;

/// The fleet most cases run against: three hosts, all of them the counting listener.
const FLEET: &str = r#"{
    nixdeploy.hosts = {
      web-1 = host "web-1" [ "web" "canary" ];
      web-2 = host "web-2" [ "web" ];
      db-1 = host "db-1" [ "db" ];
    };
  };
}"#;

/// A runbook that would contact every host if the inventory were usable.
const TOUCH_ALL: &str = "exec(hosts(), \"true\");\n";

/// What a case runs and what it must produce.
struct Case {
    name: &'static str,
    area: &'static str,
    /// Arguments after `nixdeploy`; `{runbook}`, `{flake}` and `{dir}` are filled in.
    args: Vec<String>,
    /// `bad.rhai` in the case directory.
    runbook: Option<String>,
    /// The flake's outputs, when not [`FLEET`] (`d` and `host` are in scope).
    outputs: Option<String>,
    /// Whole `flake.nix` text (for flakes that must not even parse).
    flake_text: Option<String>,
    /// Extra files, relative to the case directory.
    files: Vec<(&'static str, String)>,
    /// Extra environment (`None` removes the variable).
    env: Vec<(&'static str, Option<String>)>,
    code: i32,
    /// Every fragment must appear in stderr.
    fragments: Vec<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Case {
    fn new(area: &'static str, name: &'static str, code: i32, fragments: &[&str]) -> Case {
        Case {
            name,
            area,
            args: strings(&["run", "{runbook}", "--flake", "{flake}"]),
            runbook: Some(TOUCH_ALL.into()),
            outputs: None,
            flake_text: None,
            files: Vec::new(),
            env: Vec::new(),
            code,
            fragments: strings(fragments),
        }
    }
    fn runbook(mut self, text: &str) -> Case {
        self.runbook = Some(text.into());
        self
    }
    fn args(mut self, args: &[&str]) -> Case {
        self.args = strings(args);
        self
    }
    fn extra(mut self, args: &[&str]) -> Case {
        self.args.extend(strings(args));
        self
    }
    fn outputs(mut self, outputs: &str) -> Case {
        self.outputs = Some(outputs.into());
        self
    }
    fn flake_text(mut self, text: &str) -> Case {
        self.flake_text = Some(text.into());
        self
    }
    /// A different exit code than the area's.
    fn exit(mut self, code: i32) -> Case {
        self.code = code;
        self
    }
    /// One more fragment that must appear.
    fn also(mut self, fragment: &str) -> Case {
        self.fragments.push(fragment.into());
        self
    }
    fn file(mut self, path: &'static str, text: &str) -> Case {
        self.files.push((path, text.into()));
        self
    }
    fn env(mut self, key: &'static str, value: Option<&str>) -> Case {
        self.env.push((key, value.map(str::to_string)));
        self
    }
}

/// A runbook that fails; `at` is its `bad.rhai:line:col`.
fn rb(name: &'static str, text: &str, at: &str, message: &str) -> Case {
    Case::new("runbook", name, 3, &[at, message]).runbook(text)
}

/// A key spec given to `upload_key` on line 1.
fn key(name: &'static str, spec: &str, message: &str) -> Case {
    Case::new("key spec", name, 3, &["bad.rhai:1:1", message])
        .runbook(&format!("upload_key(hosts(), #{{ {spec} }});\n"))
}

/// A native inventory (`nixdeploy` output) that cannot be used; `field` locates the problem.
fn inv(name: &'static str, outputs: &str, field: &str, message: &str) -> Case {
    Case::new("inventory", name, 4, &[field, message]).outputs(outputs)
}

/// A deploy-rs inventory (`deploy` output) that cannot be used.
fn deploy_rs(name: &'static str, outputs: &str, field: &str, message: &str) -> Case {
    Case::new("deploy-rs", name, 4, &[field, message]).outputs(outputs)
}

/// A colmena inventory (`colmenaHive` output) that cannot be used.
fn colmena(name: &'static str, outputs: &str, field: &str, message: &str) -> Case {
    Case::new("colmena", name, 4, &[field, message]).outputs(outputs)
}

/// A makeHive-shaped hive with node web-1 whose `deployment` is `deployment`.
fn hive(deployment: &str) -> String {
    format!(
        r#"{{ colmenaHive = {{ meta = {{ nixpkgs = throw "not read"; }};
            nodes.web-1.config = {{ deployment = {deployment}; system.build.toplevel = d "web-1"; }}; }}; }}"#
    )
}

/// An `--on` selector that cannot be used.
fn on(name: &'static str, selector: &str, fragments: &[&str]) -> Case {
    Case::new("selector", name, 4, fragments).extra(&["--on", selector])
}

/// A `--set` parameter that cannot be used, against a runbook declaring a few.
fn set(name: &'static str, value: &str, fragments: &[&str]) -> Case {
    Case::new("param", name, 4, fragments)
        .runbook(
            "//! param batch: int = 2  hosts per wave\n//! param ratio: float = 0.5  share\n\
             //! param force: bool = false  skip checks\n//! param mode: string = \"switch\"  mode\n\
             exec(hosts(), \"true\");\n",
        )
        .extra(&["--set", value])
}

/// A command line that clap rejects (exit 2).
fn flag(name: &'static str, args: &[&str], fragments: &[&str]) -> Case {
    Case::new("flag", name, 2, fragments).args(args)
}

fn catalogue() -> Vec<Case> {
    let mut cases = vec![
        // ---- runbooks: syntax ----
        rb(
            "syntax: missing expression",
            "let x = 1;\nlet y = ;\n",
            "bad.rhai:2:9",
            "Unexpected ';'",
        ),
        rb(
            "syntax: unclosed paren",
            "let ok = 1;\nlet broken = (;\n",
            "bad.rhai:2:15",
            "2 | let broken = (;",
        ),
        rb(
            "syntax: unterminated string",
            "let s = \"abc;\n",
            "bad.rhai:1:9",
            "string is not terminated",
        ),
        rb(
            "syntax: unclosed block",
            "if true {\n  print(1);\n",
            "bad.rhai:3:1",
            "to terminate this block",
        ),
        rb(
            "syntax: stray token",
            "let x = 1 2;\n",
            "bad.rhai:1:11",
            "to terminate this statement",
        ),
        rb(
            "syntax: reserved word",
            "let fn = 1;\n",
            "bad.rhai:1:5",
            "name of a variable",
        ),
        // ---- runbooks: names ----
        rb(
            "unknown function",
            "let h = hosts();\nfrobnicate(h);\n",
            "bad.rhai:2:1",
            "frobnicate",
        ),
        rb(
            "known function, wrong arity",
            "exec();\n",
            "bad.rhai:1:1",
            "Function not found: exec ()",
        ),
        rb(
            "undefined variable",
            "print(nope);\n",
            "bad.rhai:1:7",
            "nope",
        ),
        rb(
            "unknown host",
            "let h = host(\"web-9\");\n",
            "bad.rhai:1:9",
            "web-9",
        ),
        rb(
            "selector matching nothing",
            "hosts(\"mail-*\");\n",
            "bad.rhai:1:1",
            "matches no host",
        ),
        rb(
            "malformed selector in a runbook",
            "hosts(\"web-1,,\");\n",
            "bad.rhai:1:1",
            "empty item",
        ),
        rb(
            "thrown error",
            "print(1);\nthrow \"stop here\";\n",
            "bad.rhai:2:1",
            "stop here",
        ),
        rb(
            "error inside a function",
            "fn deploy(sel) {\n    hosts(sel)\n}\n\ndeploy(\"nope-*\");\n",
            "bad.rhai:2:5",
            "bad.rhai:5:1",
        ),
        // ---- runbooks: argument types ----
        rb(
            "exec: hosts not a selection",
            "exec(42, \"true\");\n",
            "bad.rhai:1:1",
            "expected a host, an array of hosts, a selector string or a report",
        ),
        rb(
            "exec: command not a string",
            "exec(hosts(), 42);\n",
            "bad.rhai:1:1",
            "must be a string or an array",
        ),
        rb(
            "exec: empty command",
            "exec(hosts(), \"   \");\n",
            "bad.rhai:1:1",
            "the command is empty",
        ),
        rb(
            "exec: options not a map",
            "exec(hosts(), \"true\", 5);\n",
            "bad.rhai:1:1",
            "Function not found: exec (array",
        ),
        // ---- runbooks: option maps ----
        rb(
            "exec: misspelled option",
            "exec(hosts(), \"true\", #{ timeot: 1 });\n",
            "bad.rhai:1:1",
            "unknown option `timeot`",
        ),
        rb(
            "exec: timeout not a number",
            "exec(hosts(), \"true\", #{ timeout: \"ten\" });\n",
            "bad.rhai:1:1",
            "option `timeout` must be a number of seconds",
        ),
        rb(
            "exec: negative timeout",
            "exec(hosts(), \"true\", #{ timeout: -1 });\n",
            "bad.rhai:1:1",
            "between 0 and 604800",
        ),
        rb(
            "exec: quiet not a bool",
            "exec(hosts(), \"true\", #{ quiet: \"yes\" });\n",
            "bad.rhai:1:1",
            "option `quiet` must be a bool",
        ),
        rb(
            "exec: read_only not a bool",
            "exec(hosts(), \"true\", #{ read_only: 1 });\n",
            "bad.rhai:1:1",
            "option `read_only` must be a bool",
        ),
        rb(
            "exec: stdin not a string",
            "exec(hosts(), \"cat\", #{ stdin: [1] });\n",
            "bad.rhai:1:1",
            "option `stdin` must be a string",
        ),
        rb(
            "exec: max_output too small",
            "exec(hosts(), \"true\", #{ max_output: 10 });\n",
            "bad.rhai:1:1",
            "`max_output` must be a number of bytes of at least 64",
        ),
        rb(
            "exec: max_output not a number",
            "exec(hosts(), \"true\", #{ max_output: \"1M\" });\n",
            "bad.rhai:1:1",
            "`max_output` must be a number of bytes",
        ),
        rb(
            "activate: unknown mode",
            "activate(hosts(), #{ mode: \"swtich\" });\n",
            "bad.rhai:1:1",
            "swtich",
        ),
        rb(
            "activate: misspelled option",
            "activate(hosts(), #{ magic_rolback: false });\n",
            "bad.rhai:1:1",
            "magic_rolback",
        ),
        rb(
            "deploy: misspelled option",
            "deploy(hosts(), #{ magic_rolback: false });\n",
            "bad.rhai:1:1",
            "deploy: unknown option `magic_rolback`",
        ),
        rb(
            "deploy: keys not a bool",
            "deploy(hosts(), #{ keys: \"yes\" });\n",
            "bad.rhai:1:1",
            "deploy: option `keys` must be a bool",
        ),
        rb(
            "deploy: unknown mode",
            "deploy(hosts(), #{ mode: \"swtich\" });\n",
            "bad.rhai:1:1",
            "swtich",
        ),
        rb(
            "deploy: copy via an unknown route",
            "deploy(hosts(), #{ via: \"ftp\" });\n",
            "bad.rhai:1:1",
            "deploy: option `via` must be \"direct\", \"cache\" or \"import\", found \"ftp\"",
        ),
        rb(
            "deploy: via cache with no cache in the inventory",
            "deploy(hosts(), #{ via: \"cache\" });\n",
            "bad.rhai:1:1",
            "has no binary cache in the inventory",
        ),
        rb(
            "deploy: a profile no host has",
            "deploy(hosts(), #{ profile: \"nope\" });\n",
            "bad.rhai:1:1",
            "deploy: host ",
        ),
        rb(
            "deploy: a specialisation with a named profile",
            "deploy(hosts(), #{ profile: \"app\", specialisation: \"rescue\" });\n",
            "bad.rhai:1:1",
            "deploy: `specialisation` is about the system",
        ),
        rb(
            "deploy: build on an unknown builder",
            "deploy(hosts(), #{ on: #{ \"web-1\": \"nowhere\" } });\n",
            "bad.rhai:1:1",
            "deploy: unknown builder `nowhere` for web-1",
        ),
        // ---- runbooks: libraries ----
        rb(
            "import not found",
            "import \"missing_lib\" as m;\n",
            "bad.rhai:1:8",
            "cannot find module `missing_lib`",
        ),
        Case::new(
            "runbook",
            "syntax error in a library",
            3,
            &["lib/broken.rhai:1:11", "/bad.rhai:1:8"],
        )
        .runbook("import \"broken\" as b;\nb::start();\n")
        .file("lib/broken.rhai", "fn start( {\n")
        .extra(&["--lib", "{dir}/lib"]),
        Case::new(
            "runbook",
            "import cycle",
            3,
            &["import cycle: ", "lib/b.rhai:1:8", "/bad.rhai:1:8"],
        )
        .runbook("import \"a\" as a;\n")
        .file("lib/a.rhai", "import \"b\" as b;\n")
        .file("lib/b.rhai", "import \"a\" as a;\n")
        .extra(&["--lib", "{dir}/lib"]),
        // ---- runbooks: gates and scope ----
        rb(
            "host outside --on",
            "host(\"db-1\");\n",
            "bad.rhai:1:1",
            "host `db-1` is not selected by --on",
        )
        .extra(&["--on", "web-1"]),
        Case::new(
            "runbook",
            "confirmation gate without a terminal",
            5,
            &["bad.rhai:1:1", "--yes"],
        )
        .runbook("wait_for_confirm(\"go on?\");\nexec(hosts(), \"true\");\n"),
        // ---- runbooks: parameter declarations ----
        Case::new(
            "param",
            "declared parameter of unknown type",
            4,
            &["bad.rhai:1", "unknown type `color`"],
        )
        .runbook("//! param tint: color = \"red\"  a colour\nprint(1);\n"),
        Case::new(
            "param",
            "declared default of the wrong type",
            4,
            &["bad.rhai:1", "default of `batch`: `many` is not an int"],
        )
        .runbook("//! param batch: int = many  hosts per wave\nprint(1);\n"),
        // ---- key specs ----
        key(
            "key: name with a slash",
            "name: \"a/b\", text: \"x\"",
            "plain file name",
        ),
        key(
            "key: name is ..",
            "name: \"..\", text: \"x\"",
            "plain file name",
        ),
        key(
            "key: permissions not octal",
            "name: \"k\", text: \"x\", permissions: \"0999\"",
            "octal",
        ),
        key(
            "key: setuid permissions",
            "name: \"k\", text: \"x\", permissions: \"4755\"",
            "wider than 0777",
        ),
        key(
            "key: permissions as a number",
            "name: \"k\", text: \"x\", permissions: 600",
            "octal string",
        ),
        key(
            "key: no source",
            "name: \"k\"",
            "exactly one of `text`, `file` or `command`",
        ),
        key(
            "key: two sources",
            "name: \"k\", text: \"x\", file: \"/etc/hostname\"",
            "not several",
        ),
        key(
            "key: empty command",
            "name: \"k\", command: []",
            "non-empty array",
        ),
        key(
            "key: command of numbers",
            "name: \"k\", command: [1, 2]",
            "non-empty array of strings",
        ),
        key(
            "key: relative dest_dir",
            "name: \"k\", text: \"x\", dest_dir: \"run/keys\"",
            "must be an absolute path",
        ),
        key(
            "key: dest_dir with ..",
            "name: \"k\", text: \"x\", dest_dir: \"/run/../etc\"",
            "without `..`",
        ),
        key(
            "key: invalid user",
            "name: \"k\", text: \"x\", user: \"bad user\"",
            "not a valid account name",
        ),
        key(
            "key: invalid group",
            "name: \"k\", text: \"x\", group: \"-g\"",
            "not a valid account name",
        ),
        key(
            "key: unknown upload_at",
            "name: \"k\", text: \"x\", upload_at: \"later\"",
            "upload_at",
        ),
        key(
            "key: unknown field",
            "name: \"k\", text: \"x\", colour: \"red\"",
            "unknown field `colour`",
        ),
        key(
            "key: file in the Nix store",
            "name: \"k\", file: \"/nix/store/00000000000000000000000000000000-secrets/k\"",
            "inside /nix/store",
        ),
        key(
            "key: insecure_dest_dir not a bool",
            "name: \"k\", text: \"x\", insecure_dest_dir: \"yes\"",
            "true or false",
        ),
        key(
            "key: unreadable file",
            "name: \"k\", file: \"/nonexistent/secret\"",
            "cannot read /nonexistent/secret",
        ),
        key(
            "key: failing command",
            "name: \"k\", command: [\"false\"]",
            "exited",
        ),
        Case::new(
            "key spec",
            "key: spec not a map",
            3,
            &["bad.rhai:1:1", "Function not found: upload_key (array"],
        )
        .runbook("upload_key(hosts(), \"k\");\n"),
        // ---- params (--set) ----
        set(
            "--set without =",
            "batch",
            &["--set `batch`", "expected KEY=VALUE"],
        ),
        set(
            "--set with a bad key",
            "a-b=1",
            &["--set `a-b=1`", "letters, digits and `_`"],
        ),
        set(
            "--set of an undeclared parameter",
            "colour=red",
            &["--set colour", "no parameter `colour`"],
        ),
        set(
            "--set int with text",
            "batch=many",
            &["--set batch", "`many` is not an int"],
        ),
        set(
            "--set float with text",
            "ratio=half",
            &["--set ratio", "`half` is not a float"],
        ),
        set(
            "--set bool with maybe",
            "force=maybe",
            &["--set force", "`maybe` is not a bool"],
        ),
        set(
            "--set with an empty key",
            "=1",
            &["--set `=1`", "the key must be"],
        ),
        // ---- selectors (--on) ----
        on("--on empty", "", &["column 1", "selector is empty"]),
        on(
            "--on double comma",
            "web-1,,web-2",
            &["at column 7", "empty item"],
        ),
        on(
            "--on trailing comma",
            "web-1,",
            &["at column 7", "trailing ','"],
        ),
        on("--on double exclusion", "!!web-1", &["column 2", "'!!'"]),
        on(
            "--on unknown host",
            "web-9",
            &["selector 'web-9'", "did you mean 'web-1'"],
        ),
        on(
            "--on glob matching nothing",
            "mail-*",
            &["'mail-*' matches no host"],
        ),
        on(
            "--on unknown tag",
            "@nope",
            &["selector '@nope'", "unknown tag 'nope'"],
        ),
        on(
            "--on invalid character",
            "web$1",
            &["column 4", "invalid character"],
        ),
        on(
            "--on lone @",
            "@",
            &["at column 1", "must be followed by a tag"],
        ),
        on(
            "--on lone !",
            "!",
            &["at column 1", "must be followed by a host name"],
        ),
        on(
            "--on unclosed bracket",
            "web-[12",
            &["at column 5", "'[' is never closed"],
        ),
        on(
            "--on spaces only",
            "   ",
            &["at column 1", "selector is empty"],
        ),
        // ---- flags ----
        flag(
            "unknown flag",
            &["run", "x.rhai", "--frobnicate"],
            &["unexpected argument '--frobnicate'"],
        ),
        flag(
            "--parallel 0",
            &["run", "x.rhai", "--parallel", "0"],
            &["'--parallel <PARALLEL>'", "0 is not in 1..=1024"],
        ),
        flag(
            "--parallel not a number",
            &["run", "x.rhai", "--parallel", "many"],
            &["'--parallel <PARALLEL>'", "invalid value 'many'"],
        ),
        flag(
            "--flake without a value",
            &["run", "x.rhai", "--flake"],
            &["a value is required for '--flake <REF>'"],
        ),
        flag(
            "unknown subcommand",
            &["deploy"],
            &["unrecognized subcommand 'deploy'"],
        ),
        flag(
            "--on given twice",
            &["run", "x.rhai", "--on", "a", "--on", "b"],
            &["'--on <SELECTOR>' cannot be used multiple times"],
        ),
        flag(
            "run without a runbook",
            &["run", "--flake", "."],
            &["a runbook is required"],
        ),
        Case::new(
            "flag",
            "runbook file missing",
            4,
            &["cannot read runbook", "missing.rhai"],
        )
        .args(&["run", "{dir}/missing.rhai", "--flake", "{flake}"]),
        Case::new(
            "flag",
            "runbook is a directory",
            4,
            &["cannot read runbook"],
        )
        .args(&["run", "{dir}", "--flake", "{flake}"]),
        Case::new(
            "flag",
            "log --on with a tag",
            4,
            &["invalid `--on`", "journal only knows host names"],
        )
        .args(&["log", "--on", "@db"]),
        // ---- native inventories ----
        inv(
            "tags not a list",
            r#"{ nixdeploy.hosts.web-1 = { toplevel = d "w"; tags = "web"; }; }"#,
            "host web-1: field tags",
            "must be a list of strings",
        ),
        inv(
            "targetPort out of range",
            r#"{ nixdeploy.hosts.web-1 = { toplevel = d "w"; targetPort = 70000; }; }"#,
            "host web-1: field targetPort",
            "70000 (out of range)",
        ),
        inv(
            "targetPort as a string in defaults",
            r#"{ nixdeploy = { defaults.targetPort = "22"; hosts.web-1.toplevel = d "w"; }; }"#,
            "nixdeploy.defaults: field targetPort",
            "found a string",
        ),
        inv(
            "buildOn a list",
            r#"{ nixdeploy.hosts.web-1 = { toplevel = d "w"; buildOn = [ "arm" ]; }; }"#,
            "host web-1: field buildOn",
            "must be a string, found a list",
        ),
        inv(
            "buildOn an unknown builder",
            r#"{ nixdeploy.hosts.web-1 = { toplevel = d "w"; buildOn = "arm"; }; }"#,
            "host web-1: field buildOn",
            "unknown builder 'arm'",
        ),
        inv(
            "cache without a push URL",
            r#"{ nixdeploy.hosts.web-1 = { toplevel = d "w"; cache.publicKey = "c-1:vWRv1eF5Pyvrlwuc30R7HHx1cgAsTqoBekPKiAK0DDI="; }; }"#,
            "host web-1, field cache: field push",
            "is missing",
        ),
        inv(
            "cache publicKey not NAME:BASE64",
            r#"{ nixdeploy = { defaults.cache = { push = "file:///c"; publicKey = "c-1"; }; hosts.web-1.toplevel = d "w"; }; }"#,
            "nixdeploy.defaults, field cache: field publicKey",
            "must be NAME:BASE64",
        ),
        inv(
            "cache signing key as a Nix path (copied into the store)",
            r#"{ nixdeploy = { defaults.cache = { push = "file:///c"; publicKey = "c-1:vWRv1eF5Pyvrlwuc30R7HHx1cgAsTqoBekPKiAK0DDI="; signingKeyFile = ./cache-key; }; hosts.web-1.toplevel = d "w"; }; }"#,
            "nixdeploy.defaults, field cache: field signingKeyFile",
            "is in the Nix store",
        ),
        rb(
            "copy via an unknown route",
            "copy(hosts(), #{ via: \"ftp\" });\n",
            "bad.rhai:1:1",
            "option `via` must be \"direct\", \"cache\" or \"import\", found \"ftp\"",
        ),
        rb(
            "copy via cache with no cache in the inventory",
            "copy(hosts(), #{ via: \"cache\" });\n",
            "bad.rhai:1:1",
            "has no binary cache in the inventory",
        ),
        inv(
            "builder without host",
            r#"{ nixdeploy = { hosts.web-1.toplevel = d "w"; builders.arm = { systems = [ "aarch64-linux" ]; }; }; }"#,
            "builder arm",
            "field host is missing",
        ),
        inv(
            "builder without systems",
            r#"{ nixdeploy = { hosts.web-1.toplevel = d "w"; builders.arm = { host = "b"; }; }; }"#,
            "builder arm",
            "field systems is missing",
        ),
        inv(
            "host name with a comma",
            r#"{ nixdeploy.hosts."web,1".toplevel = d "w"; }"#,
            "host web,1: invalid host name",
            "contains ','",
        ),
        inv(
            "host names differing only in case",
            r#"{ nixdeploy.hosts = { Web-1.toplevel = d "a"; web-1.toplevel = d "b"; }; }"#,
            "hosts 'Web-1' and 'web-1'",
            "differ only in case",
        ),
        inv(
            "misspelled host field",
            r#"{ nixdeploy.hosts.web-1 = { toplevel = d "w"; targetHostt = "x"; }; }"#,
            "host web-1: unknown field targetHostt",
            "did you mean targetHost",
        ),
        inv(
            "unknown top-level field",
            r#"{ nixdeploy = { hosts.web-1.toplevel = d "w"; hots = { }; }; }"#,
            "nixdeploy: unknown field hots",
            "did you mean hosts",
        ),
        inv(
            "host without toplevel",
            r#"{ nixdeploy.hosts.web-1 = { tags = [ "web" ]; }; }"#,
            "host web-1: no toplevel",
            "nixdeploy.hosts.web-1.toplevel",
        ),
        inv(
            "toplevel not a derivation",
            r#"{ nixdeploy.hosts.web-1 = { toplevel = "/nix/store/x"; }; }"#,
            "host web-1: field toplevel",
            "must be a derivation",
        ),
        inv(
            "toplevel throws",
            r#"{ nixdeploy.hosts.web-1.toplevel = throw "web-1 is not ready"; }"#,
            "(in host web-1, field toplevel)",
            "web-1 is not ready",
        )
        .also("/flake/flake.nix:5:")
        // An evaluation error fails that host alone (the others would go on): exit 1.
        .exit(1),
        inv(
            "toplevel throws non-ASCII text",
            r#"{ nixdeploy.hosts.web-1.toplevel = throw "Schlüssel «ß» fehlt — ünïcode"; }"#,
            "(in host web-1, field toplevel)",
            "Schlüssel «ß» fehlt — ünïcode",
        )
        .also("/flake/flake.nix:5:")
        .exit(1),
        inv(
            "targetHost in defaults",
            r#"{ nixdeploy = { defaults.targetHost = "x"; hosts.web-1.toplevel = d "w"; }; }"#,
            "nixdeploy.defaults: field targetHost",
            "cannot be a default",
        ),
        inv(
            "sshOptions not a list",
            r#"{ nixdeploy.hosts.web-1 = { toplevel = d "w"; sshOptions = "-v"; }; }"#,
            "host web-1: field sshOptions",
            "must be a list of strings",
        ),
        inv(
            "sshConfig that does not exist",
            r#"{ nixdeploy = { sshConfig = "./missing_ssh_config"; hosts.web-1.toplevel = d "w"; }; }"#,
            "field sshConfig",
            "does not exist",
        ),
        inv(
            "hosts not an attribute set",
            r#"{ nixdeploy.hosts = [ "web-1" ]; }"#,
            "nixdeploy.hosts",
            "must be an attribute set",
        ),
        inv(
            "inventory key with bad permissions",
            r#"{ nixdeploy.hosts.web-1 = (host "web-1" [ ]) // { keys.k = { text = "x"; permissions = "0999"; }; }; }"#,
            "host web-1: inventory key `k`",
            "octal",
        ),
        inv(
            "inventory key in the Nix store",
            r#"{ nixdeploy.hosts.web-1 = (host "web-1" [ ]) // { keys.k = { keyFile = "/nix/store/00000000000000000000000000000000-s/k"; }; }; }"#,
            "host web-1: inventory key `k`",
            "inside /nix/store",
        ),
        inv(
            "inventory key with two sources",
            r#"{ nixdeploy.hosts.web-1 = (host "web-1" [ ]) // { keys.k = { text = "x"; keyFile = "/etc/hostname"; }; }; }"#,
            "host web-1: inventory key `k`",
            "not several",
        ),
        inv(
            "no inventory at all",
            r#"{ packages = { }; }"#,
            "has no nixdeploy, deploy, colmenaHive or nixosConfigurations output",
            "flake-schema.md",
        ),
        Case::new(
            "inventory",
            "flake directory without flake.nix",
            4,
            &["has no flake.nix"],
        )
        .args(&["run", "{runbook}", "--flake", "{dir}/empty"])
        .file("empty/README", "nothing here\n"),
        Case::new(
            "inventory",
            "flake path that does not exist",
            4,
            &["cannot be read"],
        )
        .args(&["run", "{runbook}", "--flake", "{dir}/nowhere"]),
        Case::new(
            "inventory",
            "flake.nix that does not parse",
            4,
            &["failed to evaluate the inventory", "/flake/flake.nix:1:43"],
        )
        .flake_text("{ outputs = { self }: { nixdeploy.hosts = ; }; }\n"),
        // ---- deploy-rs inventories ----
        deploy_rs(
            "deploy without nodes",
            r#"{ deploy = { sshUser = "root"; }; }"#,
            "deploy",
            "no nodes",
        ),
        deploy_rs(
            "node with an invalid name",
            r#"{ deploy.nodes."a b" = { hostname = "x"; profiles.system.path = d "a"; }; }"#,
            "deploy.nodes.a b",
            "invalid host name",
        ),
        deploy_rs(
            "node without a system profile",
            r#"{ deploy.nodes.web-1 = { hostname = "127.0.0.1"; }; }"#,
            "deploy.nodes.web-1",
            "no system profile",
        ),
        deploy_rs(
            "sshOpts not a list",
            r#"{ deploy.nodes.web-1 = { hostname = "127.0.0.1"; sshOpts = "-v"; profiles.system.path = d "a"; }; }"#,
            "deploy.nodes.web-1: field sshOpts",
            "list of strings",
        ),
        deploy_rs(
            "sshUser a number",
            r#"{ deploy = { sshUser = 7; nodes.web-1 = { hostname = "127.0.0.1"; profiles.system.path = d "a"; }; }; }"#,
            "deploy: field sshUser",
            "must be a string",
        ),
        deploy_rs(
            "remoteBuild a string",
            r#"{ deploy.nodes.web-1 = { hostname = "127.0.0.1"; remoteBuild = "yes"; profiles.system.path = d "a"; }; }"#,
            "deploy.nodes.web-1: field remoteBuild",
            "must be a boolean",
        ),
        deploy_rs(
            "profile path not a derivation",
            r#"{ deploy.nodes.web-1 = { hostname = "127.0.0.1"; profiles.system.path = "/nix/store/x"; }; }"#,
            "deploy.nodes.web-1.profiles.system",
            "must be a derivation",
        ),
        // ---- colmena inventories ----
        colmena(
            "raw colmena output without colmenaHive",
            r#"{ colmena = { meta = { }; web-1 = { }; }; }"#,
            "has a `colmena` output",
            "add `colmenaHive = colmena.lib.makeHive self.colmena;`",
        ),
        colmena(
            "hive without nodes",
            r#"{ colmenaHive = { meta = { }; }; }"#,
            "colmenaHive",
            "has no nodes",
        ),
        colmena(
            "targetPort out of range",
            &hive(r#"{ targetHost = "127.0.0.1"; targetPort = 70000; }"#),
            "colmenaHive.nodes.web-1.config.deployment: field targetPort",
            "from 1 to 65535",
        ),
        colmena(
            "tag with a selector character",
            &hive(r#"{ targetHost = "127.0.0.1"; targetPort = PORT; tags = [ "web,db" ]; }"#),
            "colmenaHive.nodes.web-1.config.deployment: field tags",
            "web,db",
        ),
        colmena(
            "targetHost null without local deployment",
            &hive(r#"{ targetHost = null; allowLocalDeployment = false; }"#),
            "colmenaHive.nodes.web-1.config.deployment",
            "targetHost is null and allowLocalDeployment is false",
        ),
        colmena(
            "privilegeEscalationCommand a string",
            &hive(
                r#"{ targetHost = "127.0.0.1"; targetPort = PORT; privilegeEscalationCommand = "sudo"; }"#,
            ),
            "field privilegeEscalationCommand",
            "must be a list of strings",
        ),
        colmena(
            "toplevel not a derivation",
            r#"{ colmenaHive.nodes.web-1.config = { deployment = { targetHost = "127.0.0.1"; targetPort = PORT; }; system.build.toplevel = 3; }; }"#,
            "colmenaHive.nodes.web-1",
            "must be a derivation",
        ),
        deploy_rs(
            "deploy-rs field with a typo",
            r#"{ deploy.nodes.web-1 = { hostname = "127.0.0.1"; sshUsr = "root"; profiles.system.path = d "a"; }; }"#,
            "deploy.nodes.web-1: unknown field sshUsr",
            "did you mean sshUser?",
        ),
        deploy_rs(
            "profilesOrder naming an unknown profile",
            r#"{ deploy.nodes.web-1 = { hostname = "127.0.0.1"; profilesOrder = [ "sytem" ]; profiles.system.path = d "a"; }; }"#,
            "deploy.nodes.web-1: profilesOrder",
            "did you mean 'system'?",
        ),
        // ---- environment ----
        Case::new(
            "environment",
            "no nix on PATH",
            4,
            &["failed to run `nix eval`", "is nix installed and on PATH"],
        )
        .env("PATH", Some("/nonexistent")),
        Case::new(
            "environment",
            "no ssh on PATH: every host fails, none is reached",
            1,
            &[
                "failed to start ssh for web-1 (is openssh-client installed?)",
                "bad.rhai:1:1",
            ],
        )
        .file("bin/nix", "#!/bin/sh\nexec /usr/bin/nix \"$@\"\n")
        .env("PATH", Some("{dir}/bin")),
        Case::new(
            "environment",
            "state directory is a file",
            4,
            &["failed to open the journal", "statefile/journal.jsonl"],
        )
        .args(&["log"])
        .file("statefile", "not a directory\n")
        .env("NIXDEPLOY_STATE_DIR", Some("{dir}/statefile")),
        Case::new(
            "environment",
            "HOME unset and a selector error still exits 4",
            4,
            &["selector 'web-9'", "unknown host"],
        )
        .env("HOME", None)
        .env("NIXDEPLOY_STATE_DIR", None)
        .env("XDG_STATE_HOME", None)
        .extra(&["--on", "web-9"]),
    ];
    for case in &mut cases {
        if case.runbook.is_none() {
            case.runbook = Some(TOUCH_ALL.into());
        }
    }
    cases
}

/// Exit codes documented in docs/exit-codes.md (the first column of its table).
fn documented_codes() -> Vec<i32> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/exit-codes.md"))
        .expect("read docs/exit-codes.md");
    doc.lines()
        .filter_map(|l| l.strip_prefix('|'))
        .filter_map(|l| l.split('|').next())
        .filter_map(|c| c.trim().parse().ok())
        .collect()
}

/// Counts TCP connections to a loopback port: any contact with a host shows up here.
struct Listener {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Listener {
    fn start() -> Listener {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in socket.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Listener { port, accepted }
    }

    fn count(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    if path.parent().is_some_and(|p| p.ends_with("bin")) {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
}

/// Runs one case in its own directory; returns a description of what went wrong, if anything.
fn run_case(case: &Case, port: u16, root: &Path, index: usize) -> Result<(), String> {
    let dir = root.join(format!("case-{index:03}"));
    std::fs::create_dir_all(&dir).unwrap();
    let flake_dir = dir.join("flake");
    let flake_nix = match (&case.flake_text, &case.outputs) {
        (Some(text), _) => text.clone(),
        (None, Some(outputs)) => format!("{FLAKE_HEAD}{outputs};\n}}\n"),
        (None, None) => format!("{FLAKE_HEAD}{FLEET}\n"),
    }
    .replace("PORT", &port.to_string());
    write(&flake_dir.join("flake.nix"), &flake_nix);
    let runbook = dir.join("bad.rhai");
    write(&runbook, case.runbook.as_deref().unwrap_or(TOUCH_ALL));
    for (path, text) in &case.files {
        write(&dir.join(path), text);
    }
    let fill = |a: &String| {
        a.replace("{runbook}", &runbook.display().to_string())
            .replace("{flake}", &format!("path:{}", flake_dir.display()))
            .replace("{dir}", &dir.display().to_string())
    };
    let args: Vec<String> = case.args.iter().map(fill).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nixdeploy"));
    cmd.args(&args)
        .current_dir(&dir)
        .env("NIXDEPLOY_STATE_DIR", dir.join("state"))
        .env("NIX_CONFIG", "substituters =")
        .env_remove("NIXDEPLOY_PATH")
        .stdin(std::process::Stdio::null());
    for (k, v) in &case.env {
        match v {
            Some(v) => cmd.env(k, fill(v)),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // BAD_INPUTS_SHOW=1 prints every case's message, to review what users see.
    if std::env::var_os("BAD_INPUTS_SHOW").is_some() {
        let _ = writeln!(
            std::io::stderr(),
            "=== [{}] {} (exit {:?})\n{}",
            case.area,
            case.name,
            out.status.code(),
            stderr.trim()
        );
    }
    let mut problems = Vec::new();
    if out.status.code() != Some(case.code) {
        problems.push(format!(
            "exit {:?}, expected {}",
            out.status.code(),
            case.code
        ));
    }
    for fragment in &case.fragments {
        if !stderr.contains(fragment.as_str()) {
            problems.push(format!("no `{fragment}` in stderr"));
        }
    }
    if stderr.contains("panicked") {
        problems.push("nixdeploy panicked".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "[{}] {}: {}\n  nixdeploy {}\n  stderr: {}",
            case.area,
            case.name,
            problems.join("; "),
            args.join(" "),
            stderr.trim().replace('\n', "\n          ")
        ))
    }
}

#[test]
fn every_bad_input_fails_with_its_documented_code_and_a_located_message_touching_no_host() {
    let cases = catalogue();
    let documented = documented_codes();
    let _ = writeln!(
        std::io::stderr(),
        "bad-input catalogue: {} cases",
        cases.len()
    );
    assert!(
        cases.len() >= 80,
        "the catalogue has only {} cases",
        cases.len()
    );
    let listener = Listener::start();
    let root = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        assert!(
            documented.contains(&case.code),
            "{}: exit {} is not in docs/exit-codes.md",
            case.name,
            case.code
        );
        let before = listener.count();
        let result = run_case(case, listener.port, root.path(), i);
        if listener.count() != before {
            failures.push(format!("[{}] {}: contacted a host", case.area, case.name));
        }
        if let Err(e) = result {
            failures.push(e);
        }
    }
    // Control: a good runbook against the same fleet does reach the listener, so silence
    // above means no host was touched, not a blind detector.
    let control = Case::new("control", "a good run", 1, &[]);
    let before = listener.count();
    let _ = run_case(&control, listener.port, root.path(), 999);
    assert!(
        listener.count() > before,
        "the control run never reached the listener: the detector is blind"
    );
    let mut areas: Vec<&str> = cases.iter().map(|c| c.area).collect();
    areas.sort_unstable();
    areas.dedup();
    let _ = writeln!(
        std::io::stderr(),
        "bad-input catalogue: {} cases across {}; {} failed",
        cases.len(),
        areas.join(", "),
        failures.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}
