//! The subcommands that make nixdeploy fit a user's own repo and tools: the thin `apply`,
//! `build` and `exec` over the shipped runbooks, `runbooks`, `init`, `completions` and `man`.
//! Kept apart from the other subcommands in `cli/mod.rs` so each group reads on its own.

use std::path::PathBuf;

use clap::{Args, CommandFactory, ValueEnum};

use super::{Cli, RunFlags};
use crate::commands;
use crate::exit::Exit;

/// How `nixdeploy apply` activates (the shipped apply runbook's `mode`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ApplyMode {
    /// Activate now and make it the boot default.
    Switch,
    /// Make it the boot default only.
    Boot,
    /// Activate now without changing the boot default.
    Test,
    /// Show what activation would do.
    DryActivate,
}

/// How `nixdeploy apply` moves closures (the shipped apply runbook's `via`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ApplyVia {
    /// `nix copy` to each host over ssh.
    Direct,
    /// Push once to the inventory's binary cache; hosts substitute (docs/binary-cache.md).
    Cache,
}

/// `nixdeploy apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// switch, boot, test or dry-activate.
    #[arg(long, value_enum, default_value = "switch")]
    mode: ApplyMode,
    /// direct, or cache: push once to the inventory's binary cache and let hosts substitute.
    #[arg(long, value_enum, default_value = "direct")]
    via: ApplyVia,
    #[command(flatten)]
    run: RunFlags,
}

/// `nixdeploy build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    run: RunFlags,
}

/// `nixdeploy exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    run: RunFlags,
    /// The command, after `--`; its words are joined with spaces and run by each host's shell.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// `nixdeploy runbooks`.
#[derive(Debug, Args)]
pub struct RunbooksArgs {
    /// Print this shipped runbook's source (to copy into your repo and adapt).
    #[arg(long, value_name = "NAME")]
    show: Option<String>,
}

/// `nixdeploy init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The flake repo to set up (its directory, holding flake.nix).
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
}

/// A shell `nixdeploy completions` writes a script for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    /// bash (source it, or put it in bash-completion's directory).
    Bash,
    /// zsh (put it on $fpath as `_nixdeploy`).
    Zsh,
    /// fish (put it in ~/.config/fish/completions/).
    Fish,
}

/// `nixdeploy completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

/// `nixdeploy man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write every page (`nixdeploy.1` and one `nixdeploy-SUBCOMMAND.1` each) into this
    /// directory instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// The full help of `nixdeploy run`, as `nixdeploy help run` prints it.
pub fn run_help() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    cmd.find_subcommand_mut("run")
        .map(|c| c.render_long_help().to_string())
        .unwrap_or_default()
}

fn thin(name: &str, a: RunFlags, set: Vec<String>, strict: bool) -> anyhow::Result<Exit> {
    commands::run::run(commands::run::Options {
        shipped: true,
        fail_on_step_failure: strict,
        ..a.options(Some(PathBuf::from(name)), set)
    })
}

/// `nixdeploy apply`: the shipped apply runbook with `mode`.
pub fn apply(a: ApplyArgs) -> anyhow::Result<Exit> {
    let mode = a
        .mode
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_else(|| "switch".into());
    let via = match a.via {
        ApplyVia::Direct => "direct",
        ApplyVia::Cache => "cache",
    };
    thin(
        "apply",
        a.run,
        vec![format!("mode={mode}"), format!("via={via}")],
        false,
    )
}

/// `nixdeploy build`: the shipped build runbook.
pub fn build(a: BuildArgs) -> anyhow::Result<Exit> {
    thin("build", a.run, Vec::new(), false)
}

/// `nixdeploy exec -- CMD…`: the shipped exec runbook with the command line.
pub fn exec(a: ExecArgs) -> anyhow::Result<Exit> {
    thin(
        "exec",
        a.run,
        vec![format!("command={}", a.command.join(" "))],
        true,
    )
}

/// `nixdeploy runbooks`.
pub fn runbooks(a: RunbooksArgs) -> anyhow::Result<Exit> {
    commands::runbooks::run(a.show.as_deref())
}

/// `nixdeploy init`.
pub fn init(a: InitArgs) -> anyhow::Result<Exit> {
    commands::init::run(&a.dir)
}

/// `nixdeploy completions SHELL`: the script on stdout.
pub fn completions(a: CompletionsArgs) -> anyhow::Result<Exit> {
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "nixdeploy", &mut script);
    let mut script = String::from_utf8_lossy(&script).into_owned();
    if matches!(a.shell, Shell::Bash) {
        script = with_runbook_names(&script);
    }
    print!("{script}");
    Ok(Exit::Success)
}

/// The extension clap's bash script gets: shipped runbook names and `--set` parameter names
/// (src/cli/completions.bash), registered in place of clap's own function.
fn with_runbook_names(script: &str) -> String {
    let extra = include_str!("completions.bash")
        .replace("@RUNBOOKS@", &commands::shipped::names().join(" "));
    let script = script.replace(
        "complete -F _nixdeploy ",
        "complete -F _nixdeploy_runbooks ",
    );
    format!(
        "{script}
{extra}"
    )
}

/// `nixdeploy man`: the roff man page on stdout, or every page into `--out`.
pub fn man(a: ManArgs) -> anyhow::Result<Exit> {
    if let Some(dir) = a.out {
        std::fs::create_dir_all(&dir).map_err(|e| {
            crate::exit::Failure::input(format!("cannot create {}: {e}", dir.display()))
        })?;
        clap_mangen::generate_to(Cli::command(), &dir).map_err(|e| {
            crate::exit::Failure::input(format!(
                "cannot write man pages into {}: {e}",
                dir.display()
            ))
        })?;
        return Ok(Exit::Success);
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    use std::io::Write as _;
    std::io::stdout().write_all(&out)?;
    Ok(Exit::Success)
}
