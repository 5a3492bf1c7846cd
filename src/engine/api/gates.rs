//! Gates and pacing: `wait_for_confirm`, `sleep`, `dry_run`, `warn`.

use rhai::plugin::*;

/// A gate the operator declined, or could not be asked: the run stops here.
#[derive(Debug, Clone)]
pub struct Declined(pub String);

/// Operator gates and pacing.
#[export_module]
pub mod api {
    use std::io::{BufRead, IsTerminal, Write};
    use std::time::Duration;

    use super::super::options::Options;
    use super::super::{api, fail};
    use super::Declined;
    use crate::report::Level;

    /// Pauses for an operator: on a terminal it asks `message` and waits (up to `timeout`
    /// seconds, default 600) for `y`; with `--yes` it proceeds at once. With no terminal and no
    /// `--yes` it fails closed: the run stops before anything further is touched.
    ///
    /// ```rhai
    /// wait_for_confirm("Proceed to the remaining 90%?", #{ timeout: 600 });
    /// ```
    #[rhai_fn(name = "wait_for_confirm", return_raw)]
    pub fn wait_for_confirm_with(
        ctx: NativeCallContext,
        message: &str,
        options: rhai::Map,
    ) -> Result<bool, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let mut opts = Options::new("wait_for_confirm", options);
        let timeout = opts.seconds("timeout")?.unwrap_or(Duration::from_secs(600));
        opts.finish()?;
        if api.ctx.options.yes {
            api.ctx
                .reporter
                .message(Level::Info, format!("{message} — yes (--yes)"));
            return Ok(true);
        }
        if !api.ctx.options.interactive || !std::io::stdin().is_terminal() {
            return declined(format!(
                "`{message}` needs an operator, but there is no terminal to ask; pass --yes to proceed unattended"
            ));
        }
        eprint!("{message} [y/N] ");
        let _ = std::io::stderr().flush();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(timeout) {
            Ok(answer) if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") => Ok(true),
            Ok(_) => declined(format!("the operator declined `{message}`")),
            Err(_) => declined(format!(
                "no answer to `{message}` within {}s",
                timeout.as_secs()
            )),
        }
    }

    /// `wait_for_confirm` with the default timeout of 600 seconds.
    ///
    /// ```rhai
    /// wait_for_confirm("Deploy the databases?");
    /// ```
    #[rhai_fn(name = "wait_for_confirm", return_raw)]
    pub fn wait_for_confirm(
        ctx: NativeCallContext,
        message: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        wait_for_confirm_with(ctx, message, rhai::Map::new())
    }

    /// Waits this many seconds (interrupted by Ctrl-C).
    ///
    /// ```rhai
    /// sleep(2.5);
    /// ```
    #[rhai_fn(name = "sleep", return_raw)]
    pub fn sleep_float(ctx: NativeCallContext, seconds: f64) -> Result<(), Box<EvalAltResult>> {
        let api = api(&ctx)?;
        if !(0.0..=86_400.0).contains(&seconds) {
            return fail(format!(
                "sleep: {seconds} is not a number of seconds between 0 and 86400"
            ));
        }
        let end = std::time::Instant::now() + Duration::from_secs_f64(seconds);
        while std::time::Instant::now() < end {
            if api.ctx.interrupt.stopping() {
                // The same error the engine's own interrupt check raises: the run exits 130
                // whichever of the two notices first.
                return Err(Box::new(EvalAltResult::ErrorTerminated(
                    "interrupted".into(),
                    rhai::Position::NONE,
                )));
            }
            std::thread::sleep(
                Duration::from_millis(50)
                    .min(end.saturating_duration_since(std::time::Instant::now())),
            );
        }
        Ok(())
    }

    /// Waits this many whole seconds.
    ///
    /// ```rhai
    /// sleep(5);
    /// ```
    #[rhai_fn(name = "sleep", return_raw)]
    pub fn sleep_int(ctx: NativeCallContext, seconds: i64) -> Result<(), Box<EvalAltResult>> {
        sleep_float(ctx, seconds as f64)
    }

    /// Is this a `--dry-run`? (Mutating steps only plan in a dry run.)
    ///
    /// ```rhai
    /// if dry_run() { print("planning only"); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn dry_run(ctx: NativeCallContext) -> Result<bool, Box<EvalAltResult>> {
        Ok(api(&ctx)?.ctx.options.dry_run)
    }

    /// Shows a warning to the operator (and in `--json` events).
    ///
    /// ```rhai
    /// warn("canary is slow to answer");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn warn(ctx: NativeCallContext, message: &str) -> Result<(), Box<EvalAltResult>> {
        api(&ctx)?
            .ctx
            .reporter
            .message(Level::Warn, message.to_string());
        Ok(())
    }

    fn declined<T>(message: String) -> Result<T, Box<EvalAltResult>> {
        Err(Box::new(EvalAltResult::ErrorRuntime(
            Dynamic::from(Declined(message)),
            Position::NONE,
        )))
    }
}
