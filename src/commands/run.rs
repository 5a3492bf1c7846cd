//! `nixdeploy run RUNBOOK`: load the inventory, run the runbook on the engine, settle
//! activations, print the summary, journal every host, and exit with the truthful status.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::context::{Context, Interrupt, RunMeta, RunOptions};
use crate::engine::Session;
use crate::exit::{Exit, Failure};
use crate::fleet::Inventory;
use crate::report::{render_summary, Event, JsonSink, Level, Reporter, Sink, TerminalSink};

/// Everything `nixdeploy run` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The runbook: a file, or a shipped runbook's name when no such file exists.
    pub runbook: Option<PathBuf>,
    /// Always the shipped runbook of that name, even when a file of that name exists (the thin
    /// subcommands `apply`, `build`, `exec`).
    pub shipped: bool,
    /// `--flake`.
    pub flake: String,
    /// `--on`.
    pub on: Option<String>,
    /// `--lib` directories.
    pub lib: Vec<PathBuf>,
    /// `--parallel`.
    pub parallel: usize,
    /// `--set key=value` pairs, unparsed.
    pub set: Vec<String>,
    /// `--json`.
    pub json: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--yes`.
    pub yes: bool,
    /// `--force-unlock`.
    pub force_unlock: bool,
    /// `--ask-sudo-password`.
    pub ask_sudo_password: bool,
    /// `--sign-with FILE`.
    pub sign_with: Option<PathBuf>,
    /// `--help`.
    pub help: bool,
    /// `--persist SECS` (`None`: `--no-persist`).
    pub persist: Option<std::time::Duration>,
    /// `--eval-jobs`, `--eval-memory`, `--no-eval-cache`.
    pub eval: EvalSettings,
    /// A step that failed on any host fails the run (exit 1) even when the runbook looked at
    /// its report: `nixdeploy exec`, whose runbook reads every host's status to print it.
    pub fail_on_step_failure: bool,
    /// The command's full help as the command line renders it (printed by `--help`, with the
    /// runbook's parameters after it).
    pub usage: String,
}

/// How the selected hosts' toplevels are evaluated.
#[derive(Debug, Clone, Default)]
pub struct EvalSettings {
    /// `--eval-jobs`.
    pub jobs: Option<usize>,
    /// `--eval-memory`, in MiB.
    pub memory_mib: Option<u64>,
    /// Whether the evaluation cache is used (`--no-eval-cache` clears it).
    pub cache: bool,
}

impl EvalSettings {
    /// The options of the toplevel pass.
    pub fn options(&self) -> crate::fleet::EvalOptions {
        crate::fleet::EvalOptions {
            jobs: self.jobs,
            memory_mib: self.memory_mib,
            cache: self
                .cache
                .then(|| crate::fleet::eval_cache::Cache::in_state_dir(&crate::paths::state_dir())),
        }
    }
}

/// Reads the inventory's metadata, then evaluates the toplevels of the hosts `on` selects and
/// no others. A host whose evaluation fails stays in the run, marked failed, so every step
/// refuses it while the others go on.
pub fn load_selected(
    flake: &str,
    on: Option<&str>,
    eval: &EvalSettings,
) -> anyhow::Result<(Inventory, crate::fleet::Evaluated)> {
    let metadata = Inventory::load(flake)?;
    let selected = metadata.select(on)?;
    metadata.evaluate(&selected, &eval.options())
}

/// Reports the toplevel pass: a failed `evaluate` step per host that did not evaluate, and a
/// note of what it cost.
pub fn report_evaluation(ctx: &Context, evaluated: &crate::fleet::Evaluated) {
    for (name, message) in &evaluated.failed {
        report_failed_evaluation(
            ctx,
            crate::fleet::HostName::new(name),
            message,
            evaluated.millis,
        );
    }
    report_evaluation_summary(ctx, evaluated);
}

/// Reports a background toplevel pass as it goes: each failed host when it fails, the
/// summary at the end. The thread ends when the pass does.
fn report_in_background(
    ctx: &Arc<Context>,
    progress: std::sync::mpsc::Receiver<crate::fleet::background::Progress>,
) -> std::thread::JoinHandle<()> {
    use crate::fleet::background::Progress;
    let ctx = ctx.clone();
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        for event in progress {
            match event {
                Progress::Failed { host, message } => {
                    report_failed_evaluation(&ctx, host, &message, started.elapsed().as_millis())
                }
                Progress::Finished(evaluated) => report_evaluation_summary(&ctx, &evaluated),
            }
        }
    })
}

/// One host's failed `evaluate` step: the host has failed.
fn report_failed_evaluation(
    ctx: &Context,
    host: crate::fleet::HostName,
    message: &str,
    millis: u128,
) {
    ctx.reporter.emit(Event::Step {
        host: host.clone(),
        step: "evaluate".into(),
        state: crate::report::StepState::Failed,
        message: Some(message.to_string()),
        duration_ms: Some(millis as u64),
    });
    ctx.reporter.emit(Event::HostState {
        host,
        state: crate::report::FinalState::Failed,
        path: None,
    });
}

/// The note of what the toplevel pass cost, when it evaluated any host.
fn report_evaluation_summary(ctx: &Context, evaluated: &crate::fleet::Evaluated) {
    let hosts = evaluated.cached + evaluated.evaluated;
    if hosts > 0 {
        ctx.reporter.emit(Event::Evaluated {
            hosts,
            cached: evaluated.cached,
            evaluated: evaluated.evaluated,
            failed: evaluated.failed.len(),
            evaluators: evaluated.evaluators,
            duration_ms: evaluated.millis as u64,
        });
    }
}

/// Splits `--set key=value` flags (values are typed later, against the runbook's declarations).
pub fn parse_set(set: &[String]) -> Result<Vec<(String, String)>, Failure> {
    let mut pairs = Vec::new();
    for item in set {
        let Some((key, value)) = item.split_once('=') else {
            return Err(Failure::input(format!(
                "--set `{item}`: expected KEY=VALUE"
            )));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Failure::input(format!(
                "--set `{item}`: the key must be letters, digits and `_`"
            )));
        }
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(pairs)
}

/// Builds the async runtime and the context every step shares.
pub fn make_context(
    runtime: &tokio::runtime::Runtime,
    inventory: Arc<Inventory>,
    on: Option<&str>,
    sinks: Vec<Box<dyn Sink>>,
    options: RunOptions,
    runbook: &str,
) -> anyhow::Result<Arc<Context>> {
    let allowed = inventory.select(on)?;
    crate::limits::check_fleet_fits(allowed.len(), options.parallel)?;
    let ctx = Context {
        allowed,
        pool: crate::transport::Pool::with_options(crate::transport::PoolOptions {
            parallel: options.parallel,
            persist: options.persist,
        })
        .context("cannot create the ssh control directory")?,
        nix: crate::nix::Nix {
            // The local setup's options first, so the inventory's `nixOptions` win over them.
            options: crate::nix::setup::LocalNix::detect()
                .options()
                .into_iter()
                .chain(inventory.nix_options.iter().cloned())
                .collect(),
        },
        reporter: Reporter::new(sinks),
        options,
        interrupt: Arc::new(Interrupt::default()),
        meta: RunMeta::detect(runbook, on),
        runtime: runtime.handle().clone(),
        locks: Default::default(),
        armed: Default::default(),
        pending_owners: Default::default(),
        found_unchanged: Default::default(),
        looks: Default::default(),
        inventory,
    };
    Ok(Arc::new(ctx))
}

/// Ctrl-C: the first stops new host operations and lets in-flight ones finish (and confirm or
/// roll back); the second abandons them; a third ends the process.
///
/// SIGTERM (a CI runner or systemd cancelling the run) is a first Ctrl-C, however often it comes:
/// the run ends in order, with its summary, and every armed host confirmed or rolled back.
pub fn watch_interrupts(runtime: &tokio::runtime::Runtime, ctx: &Arc<Context>) {
    let on_int = ctx.clone();
    runtime.spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            match on_int.interrupt.escalate() {
                1 => announce_stop(&on_int, "interrupted"),
                2 => on_int.reporter.message(
                    Level::Warn,
                    "aborting: unconfirmed hosts roll themselves back when their confirm timeout passes",
                ),
                _ => std::process::exit(Exit::Interrupted.code() as i32),
            }
        }
    });
    let on_term = ctx.clone();
    runtime.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        while term.recv().await.is_some() {
            if on_term.interrupt.stop() {
                announce_stop(&on_term, "terminated (SIGTERM)");
            }
        }
    });
}

fn announce_stop(ctx: &Context, why: &str) {
    ctx.reporter.message(
        Level::Warn,
        format!("{why}: starting nothing new; in-flight hosts finish and confirm or roll back (Ctrl-C again to abort)"),
    );
}

/// `allowApplyAll = false`: a run must name its hosts, so a forgotten `--on` cannot deploy the
/// whole fleet.
pub fn guard_apply_all(inventory: &Inventory, on: Option<&str>) -> Result<(), Failure> {
    if on.is_some() || inventory.allow_apply_all {
        return Ok(());
    }
    Err(Failure::input(format!(
        "refusing to run on every host of '{flake}': its inventory sets allowApplyAll = false \
(nixdeploy.defaults or colmena's meta), so a run must select hosts with --on (e.g. --on @web or --on {first})",
        flake = inventory.flake,
        first = inventory.hosts.keys().next().map(|h| h.as_str()).unwrap_or("HOST"),
    )))
}

/// Runs a runbook.
pub fn run(opts: Options) -> anyhow::Result<Exit> {
    let Some(runbook) = opts.runbook.clone() else {
        if opts.help {
            println!("{}\n{}", opts.usage, super::runbooks::listing());
            return Ok(Exit::Success);
        }
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "error: a runbook is required: a file, or a shipped runbook ({})\n\n{}",
                super::shipped::names().join(", "),
                opts.usage
            ),
        )
        .into());
    };
    let pairs = parse_set(&opts.set)?;
    let book = if opts.shipped {
        let name = runbook.display().to_string();
        super::shipped::shipped(&name)
            .ok_or_else(|| Failure::input(format!("no shipped runbook `{name}`")))?
    } else {
        super::shipped::load(&runbook)?
    };
    let (source, text) = (book.source.clone(), book.text.clone());
    let declared = crate::engine::params::declared(&source, &text).map_err(Failure::input)?;
    if opts.help {
        println!(
            "{}\nRunbook: {}\n{}",
            opts.usage,
            book.describe(),
            crate::engine::params::render_help(&declared)
        );
        return Ok(Exit::Success);
    }
    let params = crate::engine::params::resolve(&declared, &pairs).map_err(Failure::input)?;

    // Compile before anything else: a broken runbook touches nothing and costs no evaluation.
    let mut probe = Session::new(None, params.clone(), opts.lib.clone(), Default::default());
    book.mark(probe.resolver());
    let ast = probe
        .compile(&source, &text)
        .map_err(|e| Failure::new(e.exit, e.rendered))?;

    // Only the selected hosts' toplevels are evaluated (the others' metadata is enough).
    let metadata = Inventory::load(&opts.flake)?;
    guard_apply_all(&metadata, opts.on.as_deref())?;
    let selected = metadata.select(opts.on.as_deref())?;
    // Every library it imports (flake inputs included) must be found and parse, before any host.
    let resolving = Session::new(
        None,
        params.clone(),
        opts.lib.clone(),
        metadata.flake_inputs.clone(),
    );
    book.mark(resolving.resolver());
    crate::engine::preflight::check_imports(&resolving, &source, &text, &ast)
        .map_err(|e| Failure::new(e.exit, e.rendered))?;
    // The toplevel pass goes on in the background: the runbook starts now, and each host's
    // build and copy wait only for that host's evaluation (`deploy` pipelines them).
    let (inventory, mut evaluation) =
        metadata.evaluate_in_background(&selected, &opts.eval.options())?;
    let inventory = Arc::new(inventory);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut sinks: Vec<Box<dyn Sink>> = if opts.json {
        vec![Box::new(JsonSink::stdout())]
    } else {
        vec![Box::new(TerminalSink::new())]
    };
    // Each host is journalled as it finishes, so a run killed outright still leaves records.
    let journal_meta =
        crate::commands::journal::run_meta(&source, opts.on.as_deref(), &inventory.flake);
    sinks.push(Box::new(crate::commands::journal::JournalSink::new(
        journal_meta.clone(),
    )));
    let run_options = RunOptions {
        parallel: opts.parallel,
        dry_run: opts.dry_run,
        yes: opts.yes,
        force_unlock: opts.force_unlock,
        interactive: std::io::stdin().is_terminal(),
        sign_with: opts.sign_with.clone(),
        persist: opts.persist,
    };
    let ctx = make_context(
        &runtime,
        inventory.clone(),
        opts.on.as_deref(),
        sinks,
        run_options,
        &source,
    )?;
    // Inventory keys are uploaded mid-runbook; a bad spec must stop the run before it touches
    // any host, not after `copy` has already changed their stores.
    crate::keys::check_hosts(&ctx.allowed).map_err(Failure::input)?;
    crate::steps::check_signing_keys(&ctx)?;
    if opts.ask_sudo_password {
        // Asked once, before any host is touched; every host's sudo gets it over stdin.
        ctx.pool.set_sudo_password(crate::commands::askpass::ask()?);
    }
    watch_interrupts(&runtime, &ctx);
    let (watcher, stop_evaluating, invalid) =
        (ctx.clone(), evaluation.stopper(), evaluation.invalid());
    runtime.spawn(async move {
        // An interrupted run starts no new evaluation: hosts not evaluated yet fail. An
        // inventory error found by the toplevel pass stops the run as an interrupt would.
        while !watcher.interrupt.stopping() {
            if invalid().is_some() {
                watcher.interrupt.stop();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        stop_evaluating();
    });
    let invalid = evaluation.invalid();
    for warning in &inventory.warnings {
        ctx.reporter.message(Level::Warn, warning.clone());
    }
    ctx.reporter.emit(Event::RunStarted {
        runbook: source.clone(),
        hosts: ctx.allowed.iter().map(|h| h.name.clone()).collect(),
        dry_run: opts.dry_run,
    });
    let reporting = report_in_background(&ctx, evaluation.take_progress());
    let started = std::time::Instant::now();
    let mut session = Session::new(
        Some(ctx.clone()),
        params,
        opts.lib.clone(),
        inventory.flake_inputs.clone(),
    );
    book.mark(session.resolver());
    let outcome = session.eval(&source, &text);
    runtime.block_on(crate::activation::settle(&ctx));
    // Hosts the runbook never waited for need no evaluation: stop the pass, and report it.
    evaluation.stop();
    let _ = reporting.join();

    let mut exit = Exit::Success;
    if let Err(e) = &outcome {
        ctx.reporter.message(
            Level::Error,
            e.rendered.trim_start_matches("error: ").to_string(),
        );
        if super::annotations::enabled() {
            eprintln!(
                "{}",
                super::annotations::error_line(
                    &format!("nixdeploy: {source} stopped"),
                    e.rendered.trim_start_matches("error: ")
                )
            );
        }
        exit = e.exit;
    }
    let unhandled = session.unhandled_failures();
    for (at, message) in &unhandled {
        ctx.reporter
            .message(Level::Error, format!("{at}: {message}"));
    }
    let recorder = ctx.reporter.recorder();
    let step_failed = opts.fail_on_step_failure
        && recorder.hosts().values().any(|r| {
            r.steps
                .iter()
                .any(|s| s.state == crate::report::StepState::Failed)
        });
    if exit == Exit::Success && (!recorder.all_good() || !unhandled.is_empty() || step_failed) {
        exit = Exit::HostsFailed;
    }
    // An interrupted run says so, even though hosts it abandoned or never started show as
    // failed; the summary still lists every host's real state.
    if matches!(exit, Exit::Success | Exit::HostsFailed) && ctx.interrupt.stopping() {
        exit = Exit::Interrupted;
    }
    if let Some(message) = invalid() {
        ctx.reporter.message(Level::Error, message);
        exit = Exit::Input;
    }
    crate::commands::journal_run(&ctx, started.elapsed(), &journal_meta);
    ctx.reporter.emit(Event::RunFinished {
        exit_code: exit.code(),
        hosts: recorder
            .hosts()
            .into_iter()
            .map(|(h, r)| (h, r.state))
            .collect(),
    });
    ctx.reporter.finish();
    if super::annotations::enabled() {
        super::annotations::print_failed_hosts(recorder, &source);
    }
    if !opts.json {
        eprint!("\n{}", render_summary(recorder));
        if opts.dry_run {
            print!("{}", runtime.block_on(dry_run_plan(&ctx)));
        }
    }
    runtime.block_on(ctx.pool.close_all());
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(exit)
}

/// After a dry run: per host that would change, the store paths `copy` would send and the
/// closure diff against what the host runs now (read-only queries over the open connections).
async fn dry_run_plan(ctx: &Context) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (name, rec) in ctx.reporter.recorder().hosts() {
        let (Some(path), Some(host)) = (rec.path.as_ref(), ctx.inventory.hosts.get(&name)) else {
            continue;
        };
        let host = &host.evaluated().await;
        let _ = writeln!(out, "plan for {name}: {path}");
        let missing = match ctx.pool.get(&ctx.target(host)).await {
            Ok(conn) => crate::steps::missing_paths(&conn, path).await,
            Err(e) => Err(e),
        };
        match missing {
            Ok(paths) => {
                let _ = writeln!(out, "  copy would send {} store path(s):", paths.len());
                for p in paths {
                    let _ = writeln!(out, "    {p}");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  cannot tell what copy would send: {e:#}");
            }
        }
        match crate::steps::diff::closure_diff(ctx, host, path).await {
            Ok(d) => {
                let _ = writeln!(out, "  closure diff:");
                for line in d.text.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  cannot diff the closures: {e:#}");
            }
        }
    }
    out
}
