//! Remote commands: `exec`.

use rhai::plugin::*;

/// Running commands on hosts.
#[export_module]
pub mod api {
    use super::super::deploy::record;
    use super::super::options::Options;
    use super::super::{api, call_site, fail, target_hosts, Report};
    use crate::steps::{self, ExecOptions};
    use crate::transport::command_line;

    /// Runs a shell command line on every host; output streams live, each line prefixed with
    /// the host's name, and is collected per host: `status`, `stdout`, `stderr`, `truncated`.
    /// Output is read as bytes (invalid UTF-8 is replaced, never dropped) and at most 1 MiB of
    /// each stream is kept (its head and tail, with a marker line where bytes were dropped;
    /// `truncated` is then true). A non-zero exit marks that host's entry failed.
    ///
    /// ```rhai
    /// let out = exec(hosts("@web"), "uname -r");
    /// print(out["web-1"].stdout);
    /// ```
    #[rhai_fn(name = "exec", return_raw)]
    pub fn exec(
        ctx: NativeCallContext,
        hosts: Dynamic,
        command: Dynamic,
    ) -> Result<Report, Box<EvalAltResult>> {
        exec_with(ctx, hosts, command, rhai::Map::new())
    }

    /// `exec` with options: `read_only: true` (the command changes nothing, so it also runs in a
    /// dry run), `timeout` in seconds, `stdin` text, `quiet: true` (collect output without
    /// streaming it), `max_output` (bytes kept per stream and host, default 1048576), `sudo:
    /// true` (run it as root: through the host's `privilegeEscalation` when its login is not
    /// root). An array command is quoted word by word.
    ///
    /// ```rhai
    /// exec(hosts(), ["systemctl", "is-active", "nginx"], #{ read_only: true, timeout: 10 });
    /// ```
    #[rhai_fn(name = "exec", return_raw)]
    pub fn exec_with(
        ctx: NativeCallContext,
        hosts: Dynamic,
        command: Dynamic,
        options: rhai::Map,
    ) -> Result<Report, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let command = if command.is_string() {
            command.into_string().unwrap_or_default()
        } else if command.is_array() {
            let words: Vec<String> = command
                .into_array()
                .unwrap_or_default()
                .into_iter()
                .map(|w| w.to_string())
                .collect();
            command_line(&words)
        } else {
            return fail(format!(
                "exec: the command must be a string or an array of words, found {}",
                command.type_name()
            ));
        };
        if command.trim().is_empty() {
            return fail("exec: the command is empty");
        }
        let mut opts = Options::new("exec", options);
        let o = ExecOptions {
            read_only: opts.bool("read_only")?.unwrap_or(false),
            timeout: opts.seconds("timeout")?,
            stdin: opts.string("stdin")?.map(String::into_bytes),
            quiet: opts.bool("quiet")?.unwrap_or(false),
            sudo: opts.bool("sudo")?.unwrap_or(false),
            max_output: match opts.raw("max_output") {
                None => None,
                Some(v) if v.is_int() && v.as_int().unwrap_or(0) >= 64 => {
                    Some(v.as_int().unwrap_or(0) as usize)
                }
                Some(v) => {
                    return fail(format!(
                    "exec: option `max_output` must be a number of bytes of at least 64, found {}",
                    if v.is_int() {
                        v.to_string()
                    } else {
                        v.type_name().to_string()
                    }
                ))
                }
            },
        };
        opts.finish()?;
        let hosts = target_hosts(&api.ctx, &hosts)?;
        let results = api
            .ctx
            .runtime
            .block_on(steps::exec(&api.ctx, &hosts, &command, o));
        Ok(record(
            &api,
            Report::from_results("exec", call_site(&ctx), results, |_| None),
        ))
    }

    /// Asks once, on the terminal and without echo, for the sudo password of the hosts' logins
    /// (REPL counterpart of `run --ask-sudo-password`). Every later command that needs root
    /// gets it over stdin; hosts that failed for want of it are tried again on their next use.
    /// The password is never echoed, stored in the history, or passed on a command line.
    ///
    /// ```rhai
    /// ask_sudo_password();
    /// exec(hosts(), "id -u", #{ sudo: true });
    /// ```
    #[rhai_fn(name = "ask_sudo_password", return_raw)]
    pub fn ask_sudo_password(ctx: NativeCallContext) -> Result<(), Box<EvalAltResult>> {
        let api = api(&ctx)?;
        match crate::commands::askpass::ask() {
            Ok(password) => {
                api.ctx.pool.set_sudo_password(password);
                Ok(())
            }
            Err(e) => fail(format!("ask_sudo_password: {e}")),
        }
    }
}
