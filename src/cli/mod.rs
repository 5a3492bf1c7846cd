//! The command line: clap definitions, turned into plain options for `commands`, so clap never reaches the core.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::exit::{exit_for, Exit};

mod ecosystem;

/// Deploy NixOS configurations to fleets, with deployments written as Rhai runbooks.
#[derive(Debug, Parser)]
#[command(name = "nixdeploy", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the inventory comes from and which hosts are in play.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// The flake that holds the inventory (`nixdeploy`, `deploy.nodes` or `nixosConfigurations`).
    #[arg(long, value_name = "REF", default_value = ".")]
    pub flake: String,
    /// Only these hosts: names, globs (`web-*`), tags (`@db`), `,` for union, `!` to exclude.
    #[arg(long, value_name = "SELECTOR")]
    pub on: Option<String>,
}

/// How connections to hosts are kept.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Keep each host's ssh master this many seconds after the run, for the next run to reuse
    /// (`nixdeploy disconnect` ends them).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub persist: u64,
    /// Close every connection at the end of the run.
    #[arg(long, conflicts_with = "persist")]
    pub no_persist: bool,
}

impl ConnectArgs {
    /// How long masters outlive the run, if at all.
    pub fn persist(&self) -> Option<std::time::Duration> {
        (!self.no_persist && self.persist > 0).then(|| std::time::Duration::from_secs(self.persist))
    }
}

/// How the selected hosts' toplevels are evaluated.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Evaluator processes at once (default: from the cores and the memory available).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub eval_jobs: Option<u32>,
    /// Memory, in MiB, that evaluation may use in all; each evaluator is allowed 1024 MiB
    /// (default: half of MemAvailable).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub eval_memory: Option<u64>,
    /// Evaluate every selected host again instead of reusing earlier runs' results.
    #[arg(long)]
    pub no_eval_cache: bool,
}

impl EvalArgs {
    /// The plain settings for `commands`.
    pub fn settings(&self) -> commands::run::EvalSettings {
        commands::run::EvalSettings {
            jobs: self.eval_jobs.map(|n| n as usize),
            memory_mib: self.eval_memory,
            cache: !self.no_eval_cache,
        }
    }
}

/// Where runbook libraries are looked up.
#[derive(Debug, Clone, Args)]
pub struct LibArgs {
    /// A directory searched for `import "name"` (repeatable; also `NIXDEPLOY_PATH`, colon-separated).
    #[arg(long = "lib", value_name = "DIR")]
    pub lib: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a runbook against the fleet.
    Run(RunArgs),
    /// An interactive session on the same engine as `run`.
    Repl(ReplArgs),
    /// List the selected hosts.
    Hosts(HostsArgs),
    /// Compile runbooks and everything they import, without contacting any host.
    Check(CheckArgs),
    /// Write the API reference (Markdown) and `.d.rhai` definitions.
    Doc(DocArgs),
    /// Show the deployment journal.
    Log(LogArgs),
    /// End the ssh connections earlier runs kept open (`--persist`).
    Disconnect,
    /// Check the deploying machine and the selected hosts, read-only, and say how to fix problems.
    Doctor(DoctorArgs),
    /// Disposable local targets: network namespaces running sshd, each with its own Nix store.
    Sandbox {
        #[command(subcommand)]
        action: SandboxAction,
    },
    // ---- ecosystem: daily habits, setup and shell integration (cli/ecosystem.rs) ----
    /// Build, copy and activate the selected hosts (the shipped `apply` runbook).
    Apply(ecosystem::ApplyArgs),
    /// Build the selected hosts' systems and print their store paths (the shipped `build` runbook).
    Build(ecosystem::BuildArgs),
    /// Run a command on the selected hosts, live and prefixed (the shipped `exec` runbook).
    Exec(ecosystem::ExecArgs),
    /// List the runbooks shipped with nixdeploy (`run NAME` uses them).
    Runbooks(ecosystem::RunbooksArgs),
    /// Set up a flake repo: a starter inventory from its hosts and a runbooks/ directory.
    Init(ecosystem::InitArgs),
    /// Print a shell completion script (bash, zsh or fish).
    Completions(ecosystem::CompletionsArgs),
    /// Print the man page (roff).
    Man(ecosystem::ManArgs),
    // ---- end of ecosystem ----
}

/// The flags `run` shares with the thin subcommands (`apply`, `build`, `exec`).
#[derive(Debug, Clone, Args)]
pub struct RunFlags {
    #[command(flatten)]
    fleet: FleetArgs,
    #[command(flatten)]
    lib: LibArgs,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    eval: EvalArgs,
    /// How many hosts are worked on at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1024))]
    parallel: u32,
    /// Print newline-delimited JSON events instead of the terminal view.
    #[arg(long)]
    json: bool,
    /// Run read-only steps for real; mutating steps only report what they would do.
    #[arg(long)]
    dry_run: bool,
    /// Answer yes to every `wait_for_confirm` gate.
    #[arg(long)]
    yes: bool,
    /// Break deploy locks held by other runs (loudly).
    #[arg(long)]
    force_unlock: bool,
    /// Ask once, on the terminal, for the sudo password of the hosts' logins (before any host
    /// is touched); it is fed to `sudo -S` over stdin for every command that needs root.
    #[arg(long)]
    ask_sudo_password: bool,
    /// Sign what `copy` sends with this secret key file (`nix key generate-secret`), for
    /// logins the hosts' Nix does not trust; overrides `signingKey` in the inventory.
    #[arg(long, value_name = "FILE")]
    sign_with: Option<PathBuf>,
}

impl RunFlags {
    /// The options of a run of `runbook` with these flags and `set` parameters.
    fn options(self, runbook: Option<PathBuf>, set: Vec<String>) -> commands::run::Options {
        commands::run::Options {
            runbook,
            flake: self.fleet.flake,
            on: self.fleet.on,
            lib: self.lib.lib,
            parallel: self.parallel as usize,
            set,
            json: self.json,
            dry_run: self.dry_run,
            yes: self.yes,
            force_unlock: self.force_unlock,
            ask_sudo_password: self.ask_sudo_password,
            sign_with: self.sign_with,
            help: false,
            persist: self.connect.persist(),
            eval: self.eval.settings(),
            shipped: false,
            fail_on_step_failure: false,
            usage: ecosystem::run_help(),
        }
    }
}

/// `nixdeploy run`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
struct RunArgs {
    /// The runbook to run: a file (`runbooks/apply.rhai`), or the name of a shipped runbook
    /// (`canary`; see `nixdeploy runbooks`) when no such file exists.
    #[arg(value_hint = clap::ValueHint::FilePath)]
    runbook: Option<PathBuf>,
    #[command(flatten)]
    run: RunFlags,
    /// A runbook parameter, `key=value` (repeatable); visible as `params.key`, typed as the
    /// runbook declares it (`--help` with a runbook lists them).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print help (with the runbook's own parameters when a runbook is given).
    #[arg(long, short = 'h')]
    help: bool,
}

/// `nixdeploy repl`.
#[derive(Debug, Args)]
struct ReplArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    #[command(flatten)]
    lib: LibArgs,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    eval: EvalArgs,
    /// How many hosts are worked on at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1024))]
    parallel: u32,
    /// Answer yes to every `wait_for_confirm` gate.
    #[arg(long)]
    yes: bool,
}

/// `nixdeploy hosts`.
#[derive(Debug, Args)]
struct HostsArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `nixdeploy check`.
#[derive(Debug, Args)]
struct CheckArgs {
    /// The runbooks to compile.
    #[arg(required = true)]
    runbooks: Vec<PathBuf>,
    #[command(flatten)]
    lib: LibArgs,
    /// The flake whose inputs serve `import "flake:..."`.
    #[arg(long, value_name = "REF")]
    flake: Option<String>,
}

/// `nixdeploy doc`.
#[derive(Debug, Args)]
struct DocArgs {
    /// Directory to write the reference into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// `nixdeploy doctor`.
#[derive(Debug, Args)]
struct DoctorArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Print the report as JSON (see docs/doctor.md).
    #[arg(long)]
    json: bool,
}

/// `nixdeploy log`.
#[derive(Debug, Args)]
struct LogArgs {
    /// Show only this host's history.
    host: Option<String>,
    /// Only records of these hosts.
    #[arg(long, value_name = "SELECTOR")]
    on: Option<String>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum SandboxAction {
    /// Bring up (or complete) a sandbox fleet.
    Up {
        /// How many hosts.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=256))]
        hosts: u32,
        /// How many remote builders (hosts that also build `aarch64-linux`).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=8))]
        builders: u32,
        /// Closure size per host in KiB (shared paths plus one unique path).
        #[arg(long, default_value_t = 1024)]
        size_kib: u64,
        /// Also bring up a binary cache host (busybox httpd serving DIR/cache, with a key made
        /// for this sandbox); the flake's inventory then has `defaults.cache`.
        #[arg(long)]
        cache: bool,
        /// Hosts whose `deploy` login must type its password for sudo (comma-separated);
        /// on the others its sudo rule is NOPASSWD.
        #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
        sudo_password: Vec<String>,
        /// Hosts whose Nix daemon does not trust `deploy` (comma-separated); copies to them
        /// must be signed.
        #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
        untrusted: Vec<String>,
        /// Every host runs its own Nix daemon, so its `deploy` login can use the store
        /// (copy, build on target); hosts named by --untrusted always do.
        #[arg(long)]
        nix_daemons: bool,
        /// The sandbox directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Show the sandbox's hosts and whether they answer.
    Status {
        /// The sandbox directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Break a host on purpose (no-tools, full-store, readonly-store, wrong-host-key,
    /// sshd-down, no-cache); docs/sandbox.md says how each is repaired.
    Fault {
        /// The host to break (`h2`).
        host: String,
        /// How to break it.
        fault: String,
        /// The sandbox directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Simulate a reboot of one host: its processes end, its /run is emptied, it gets a new
    /// boot id and comes up on its boot default.
    Reboot {
        /// The host to reboot (`h1`, ...).
        host: String,
        /// The sandbox directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Remove every namespace, mount, process and file the sandbox created.
    Down {
        /// The sandbox directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> ExitCode {
    crate::limits::raise_open_files();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            eprintln!("{}", render_error(&err));
            ExitCode::from(exit_for(&err).code())
        }
    }
}

/// `error: what failed: why`, one cause per `: `; rendered failures are printed as they are.
fn render_error(err: &anyhow::Error) -> String {
    if let Some(f) = err.downcast_ref::<crate::exit::Failure>() {
        if f.message.starts_with("error") {
            return f.message.clone();
        }
    }
    // anyhow's alternate form is exactly "what: cause: cause", one `: ` per link of the chain.
    format!("error: {err:#}")
}

fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Run(a) => commands::run::run(commands::run::Options {
            help: a.help,
            ..a.run.options(a.runbook, a.set)
        }),
        Command::Repl(a) => commands::repl::run(commands::repl::Options {
            flake: a.fleet.flake,
            on: a.fleet.on,
            lib: a.lib.lib,
            parallel: a.parallel as usize,
            yes: a.yes,
            persist: a.connect.persist(),
            eval: a.eval.settings(),
        }),
        Command::Disconnect => commands::disconnect::run(),
        Command::Hosts(a) => commands::hosts::run(&a.fleet.flake, a.fleet.on.as_deref(), a.json),
        Command::Check(a) => commands::check::run(&a.runbooks, &a.lib.lib, a.flake.as_deref()),
        Command::Doc(a) => commands::doc::run(&a.out),
        Command::Doctor(a) => commands::doctor::run(commands::doctor::Options {
            flake: a.fleet.flake,
            on: a.fleet.on,
            json: a.json,
        }),
        Command::Log(a) => commands::log::run(a.host.as_deref(), a.on.as_deref(), a.json),
        Command::Sandbox { action } => match action {
            SandboxAction::Up {
                hosts,
                builders,
                size_kib,
                cache,
                sudo_password,
                untrusted,
                nix_daemons,
                dir,
            } => commands::sandbox::up(
                dir,
                crate::sandbox::UpOptions {
                    hosts: hosts as usize,
                    builders: builders as usize,
                    size_kib,
                    cache,
                    sudo_password,
                    untrusted,
                    nix_daemons,
                },
            ),
            SandboxAction::Status { dir, json } => commands::sandbox::status(dir, json),
            SandboxAction::Fault { host, fault, dir } => {
                commands::sandbox::fault(dir, &host, &fault)
            }
            SandboxAction::Down { dir } => commands::sandbox::down(dir),
            SandboxAction::Reboot { host, dir } => commands::sandbox::reboot(dir, &host),
        },
        // ---- ecosystem ----
        Command::Apply(a) => ecosystem::apply(a),
        Command::Build(a) => ecosystem::build(a),
        Command::Exec(a) => ecosystem::exec(a),
        Command::Runbooks(a) => ecosystem::runbooks(a),
        Command::Init(a) => ecosystem::init(a),
        Command::Completions(a) => ecosystem::completions(a),
        Command::Man(a) => ecosystem::man(a),
    }
}
