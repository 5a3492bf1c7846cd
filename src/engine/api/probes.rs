//! Read-only helpers for the stdlib: probes from the deployer (`http_get`, `tcp_check`), facts
//! about builders, and report plumbing (`only`, `mark_failed`).

use rhai::plugin::*;

/// Probes, facts and report plumbing.
#[export_module]
pub mod api {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;

    use super::super::{api, fail, target_hosts, HostRef, Report};
    use crate::report::{Event, FinalState};

    /// An HTTP GET from the deploying machine (plain `http://` only). Returns
    /// `#{ ok, status, body, error }`; `ok` is a 2xx status.
    ///
    /// ```rhai
    /// let r = http_get("http://10.0.0.5:8080/health", 5);
    /// if !r.ok { print(r.error); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn http_get(
        ctx: NativeCallContext,
        url: &str,
        timeout_secs: i64,
    ) -> Result<rhai::Map, Box<EvalAltResult>> {
        let ssh_config = api(&ctx)?.ctx.inventory.ssh_config.clone();
        let mut m = rhai::Map::new();
        match get(
            ssh_config.as_deref(),
            url,
            Duration::from_secs(timeout_secs.clamp(1, 300) as u64),
        ) {
            Ok((status, body)) => {
                m.insert("ok".into(), ((200..300).contains(&status)).into());
                m.insert("status".into(), (status as i64).into());
                m.insert("body".into(), body.into());
                m.insert(
                    "error".into(),
                    if (200..300).contains(&status) {
                        Dynamic::UNIT
                    } else {
                        format!("HTTP {status}").into()
                    },
                );
            }
            Err(e) => {
                m.insert("ok".into(), false.into());
                m.insert("status".into(), 0_i64.into());
                m.insert("body".into(), "".into());
                m.insert("error".into(), e.into());
            }
        }
        Ok(m)
    }

    /// Runs `nixdeploy doctor`'s checks, read-only: the deploying machine's, then each host's
    /// (reachability and host key, escalation, the Nix store as `copy` reaches it, Nix trust,
    /// activation's tools, `/run`, free space, the system type). Returns
    /// `#{ ok, failed, checks }`: `ok` is false when any check failed, `failed` the names of the
    /// hosts with a failed check, `checks` one `#{ host, check, status, detail, fix }` per row
    /// (`host` is `()` for the deploying machine; see docs/doctor.md). It changes nothing, so it
    /// also runs in a dry run.
    ///
    /// ```rhai
    /// let d = doctor(hosts());
    /// if !d.ok { throw `not ready: ${d.failed}`; }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn doctor(ctx: NativeCallContext, hosts: Dynamic) -> Result<rhai::Map, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let hosts = target_hosts(&api.ctx, &hosts)?;
        let mut checks = crate::doctor::check_deployer();
        let inventory = &api.ctx.inventory;
        checks.extend(
            api.ctx
                .runtime
                .block_on(crate::doctor::check_hosts(inventory, &hosts)),
        );
        let report = crate::doctor::Report::new(checks);
        let failed: rhai::Array = report
            .failed_hosts()
            .into_iter()
            .map(Dynamic::from)
            .collect();
        let rows = rhai::serde::to_dynamic(&report.checks)
            .map_err(|e| format!("doctor: cannot convert the report: {e}"))?;
        let mut m = rhai::Map::new();
        m.insert("ok".into(), report.ok.into());
        m.insert("failed".into(), failed.into());
        m.insert("checks".into(), rows);
        Ok(m)
    }

    /// Can the deploying machine open a TCP connection to `address:port` within the timeout?
    ///
    /// ```rhai
    /// if !tcp_check("10.0.0.5", 22, 3) { warn("ssh port closed"); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn tcp_check(
        ctx: NativeCallContext,
        address: &str,
        port: i64,
        timeout_secs: i64,
    ) -> Result<bool, Box<EvalAltResult>> {
        let ssh_config = api(&ctx)?.ctx.inventory.ssh_config.clone();
        let address = real_address(ssh_config.as_deref(), address);
        let Ok(mut addrs) = (address.as_str(), port as u16).to_socket_addrs() else {
            return Ok(false);
        };
        Ok(addrs.next().is_some_and(|a| {
            TcpStream::connect_timeout(&a, Duration::from_secs(timeout_secs.clamp(1, 300) as u64))
                .is_ok()
        }))
    }

    /// A host's address as ssh would reach it: an alias of the inventory's ssh config (the
    /// sandbox's `h1`, say) becomes its `HostName`; anything else stays as it is.
    fn real_address(ssh_config: Option<&std::path::Path>, address: &str) -> String {
        let Some(config) = ssh_config else {
            return address.to_string();
        };
        let out = std::process::Command::new("ssh")
            .arg("-G")
            .arg("-F")
            .arg(config)
            .arg(address)
            .stdin(std::process::Stdio::null())
            .output();
        out.ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("hostname ").map(str::to_string))
            })
            .unwrap_or_else(|| address.to_string())
    }

    /// The Nix system types this machine builds (`system` plus `extra-platforms`).
    ///
    /// ```rhai
    /// if !local_systems().contains("aarch64-linux") { print("needs a builder"); }
    /// ```
    pub fn local_systems() -> rhai::Array {
        let out = std::process::Command::new("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "show-config",
                "--json",
            ])
            .output();
        let mut systems = Vec::new();
        if let Ok(out) = out {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                if let Some(s) = v.pointer("/system/value").and_then(|s| s.as_str()) {
                    systems.push(s.to_string());
                }
                if let Some(extra) = v
                    .pointer("/extra-platforms/value")
                    .and_then(|s| s.as_array())
                {
                    systems.extend(extra.iter().filter_map(|s| s.as_str().map(str::to_string)));
                }
            }
        }
        systems.into_iter().map(Dynamic::from).collect()
    }

    /// The inventory's remote builders: `#{ name, host, systems, max_jobs, speed_factor }` each.
    ///
    /// ```rhai
    /// for b in builders() { print(b.name + " builds " + b.systems); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn builders(ctx: NativeCallContext) -> Result<rhai::Array, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        Ok(api
            .ctx
            .inventory
            .builders
            .values()
            .map(|b| {
                let mut m = rhai::Map::new();
                m.insert("name".into(), b.name.clone().into());
                m.insert("host".into(), b.host.clone().into());
                m.insert(
                    "systems".into(),
                    b.systems
                        .iter()
                        .cloned()
                        .map(Dynamic::from)
                        .collect::<rhai::Array>()
                        .into(),
                );
                m.insert("max_jobs".into(), (b.max_jobs as i64).into());
                m.insert("speed_factor".into(), (b.speed_factor as i64).into());
                Dynamic::from(m)
            })
            .collect())
    }

    /// The part of a report that covers `hosts` (to carry a build into one wave).
    ///
    /// ```rhai
    /// let b = build(hosts());
    /// copy(only(b, hosts("@canary")));
    /// ```
    #[rhai_fn(return_raw)]
    pub fn only(
        ctx: NativeCallContext,
        report: Report,
        hosts: Dynamic,
    ) -> Result<Report, Box<EvalAltResult>> {
        let api = api(&ctx)?;
        let wanted: Vec<_> = target_hosts(&api.ctx, &hosts)?
            .into_iter()
            .map(|h| h.name.clone())
            .collect();
        report.mark_inspected();
        let entries = report
            .entries()
            .iter()
            .filter(|e| wanted.contains(&e.host.name))
            .cloned()
            .collect();
        Ok(Report::new(report.step(), report.at().to_string(), entries))
    }

    /// Marks hosts failed with a reason (a health check the runbook ran itself, say): they count
    /// as failed in the summary and the exit status.
    ///
    /// ```rhai
    /// mark_failed(host("web-3"), "nginx does not answer");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn mark_failed(
        ctx: NativeCallContext,
        hosts: Dynamic,
        reason: &str,
    ) -> Result<(), Box<EvalAltResult>> {
        let api = api(&ctx)?;
        for h in target_hosts(&api.ctx, &hosts)? {
            api.ctx.reporter.emit(Event::Step {
                host: h.name.clone(),
                step: "check".into(),
                state: crate::report::StepState::Failed,
                message: Some(reason.to_string()),
                duration_ms: None,
            });
            if api.ctx.reporter.recorder().state(&h.name) != FinalState::RolledBack {
                api.ctx.reporter.emit(Event::HostState {
                    host: h.name.clone(),
                    state: FinalState::Failed,
                    path: None,
                });
            }
        }
        Ok(())
    }

    /// Names of hosts, for messages and comparisons.
    ///
    /// ```rhai
    /// print(names(hosts("@web")));
    /// ```
    #[rhai_fn(return_raw)]
    pub fn names(hosts: Dynamic) -> Result<rhai::Array, Box<EvalAltResult>> {
        let Some(items) = hosts.clone().try_cast::<rhai::Array>() else {
            if let Some(h) = hosts.try_cast::<HostRef>() {
                return Ok(vec![Dynamic::from(h.0.name.to_string())]);
            }
            return fail("names: expected an array of hosts");
        };
        Ok(items
            .into_iter()
            .map(|d| match d.clone().try_cast::<HostRef>() {
                Some(h) => Dynamic::from(h.0.name.to_string()),
                None => d,
            })
            .collect())
    }

    fn get(
        ssh_config: Option<&std::path::Path>,
        url: &str,
        timeout: Duration,
    ) -> Result<(u16, String), String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("only http:// URLs are supported, not `{url}`"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (name, port) = authority.split_once(':').unwrap_or((authority, "80"));
        let with_port = format!("{}:{port}", real_address(ssh_config, name));
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("cannot resolve {authority}"))?;
        let mut stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        stream.set_read_timeout(Some(timeout)).ok();
        stream.set_write_timeout(Some(timeout)).ok();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: nixdeploy\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream
            .take(1 << 20)
            .read_to_end(&mut raw)
            .map_err(|e| format!("reading from {authority}: {e}"))?;
        let text = String::from_utf8_lossy(&raw);
        let status = text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{authority} did not answer with HTTP"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }
}
