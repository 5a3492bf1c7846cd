//! `build`: realise every host's system — local hosts in ONE `nix build`, remote builders through
//! Nix's own `--builders`, `buildOn = "target"` hosts on the target itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail};

use super::{fan_out, HostResult, Outcome};
use crate::context::Context;
use crate::fleet::{BuildOn, Builder, Host};
use crate::nix::{run_local, StoreUri};
use crate::report::{Event, StepState};
use crate::transport::{quote, Stream, Target};

/// Options of `build`.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Per-host override of where to build (`local`, `target`, or a builder name), e.g. from the
    /// stdlib's builder selection.
    pub build_on: BTreeMap<String, BuildOn>,
}

/// A built system.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Built {
    /// The toplevel output path.
    pub path: String,
    /// The derivation it came from.
    pub drv: String,
    /// Where it was built: `local`, `target`, or `builder:<name>`.
    pub built_on: String,
}

/// Builds the systems of `hosts`.
pub async fn build(
    ctx: &Arc<Context>,
    hosts: &[Arc<Host>],
    opts: &BuildOptions,
) -> Vec<HostResult<Built>> {
    let place = |h: &Host| {
        opts.build_on
            .get(h.name.as_str())
            .cloned()
            .unwrap_or_else(|| h.build_on.clone())
    };
    // Hosts whose evaluation failed go through `fan_out`, which fails them with the message.
    let (unevaluated, evaluated): (Vec<_>, Vec<_>) = hosts
        .iter()
        .cloned()
        .partition(|h| h.not_evaluated().is_some());
    // Only a system derivation can be built on the target; prebuilt systems, hosts without
    // one, other profiles and local hosts (the target is this machine) are realised here.
    let (mut on_target, here): (Vec<_>, Vec<_>) = evaluated.into_iter().partition(|h| {
        place(h) == BuildOn::Target
            && !h.local
            && h.has_system
            && !h.is_prebuilt()
            && h.profiles.is_empty()
    });
    let mut results: BTreeMap<String, Result<Outcome<Built>, String>> = BTreeMap::new();

    // Hosts being built are about to be copied to: open their connections while Nix builds
    // (key exchange is the slow part of a redeploy), so the copy finds them ready.
    for h in hosts {
        let (ctx, target) = (ctx.clone(), ctx.target(h));
        tokio::spawn(async move {
            let _ = ctx.pool.get(&target).await;
        });
    }

    // Hosts built by this machine's Nix: one invocation per distinct set of forced builders.
    let mut groups: BTreeMap<Option<String>, Vec<Arc<Host>>> = BTreeMap::new();
    for h in here {
        let key = match place(&h) {
            BuildOn::Builder(b) => Some(b),
            _ => None,
        };
        groups.entry(key).or_default().push(h);
    }
    for (builder, group) in groups {
        for (h, r) in build_here(ctx, &group, builder.as_deref()).await {
            results.insert(h.name.to_string(), r);
        }
    }
    on_target.extend(unevaluated);
    let c = ctx.clone();
    for (h, r) in fan_out(ctx, &on_target, "build", move |host| {
        let ctx = c.clone();
        async move { build_on_target(&ctx, &host).await }
    })
    .await
    {
        results.insert(h.name.to_string(), r);
    }
    hosts
        .iter()
        .map(|h| {
            (
                h.clone(),
                results
                    .remove(h.name.as_str())
                    .unwrap_or_else(|| Err("not built".into())),
            )
        })
        .collect()
}

/// The Nix `builders` line for one inventory builder.
pub fn builder_spec(b: &Builder) -> String {
    let features = if b.supported_features.is_empty() {
        "-".to_string()
    } else {
        b.supported_features.join(",")
    };
    format!(
        "ssh-ng://{} {} - {} {} {}",
        b.host,
        b.systems.join(","),
        b.max_jobs.max(1),
        b.speed_factor.max(1),
        features
    )
}

async fn build_here(
    ctx: &Arc<Context>,
    hosts: &[Arc<Host>],
    forced: Option<&str>,
) -> Vec<HostResult<Built>> {
    let start = Instant::now();
    for h in hosts {
        ctx.reporter.emit(Event::Step {
            host: h.name.clone(),
            step: "build".into(),
            state: StepState::Started,
            message: None,
            duration_ms: None,
        });
    }
    let outcome = realise_locally(ctx, hosts, forced).await;
    let elapsed = start.elapsed().as_millis() as u64;
    hosts
        .iter()
        .map(|h| {
            let r = match &outcome {
                Ok(done) => done
                    .get(h.name.as_str())
                    .cloned()
                    .unwrap_or_else(|| Err("not built".into())),
                Err(e) => Err(format!("{e:#}")),
            };
            let (state, message) = match &r {
                Ok(o) => (o.state, o.message.clone()),
                Err(e) => (StepState::Failed, Some(e.clone())),
            };
            if r.is_err() {
                ctx.reporter.emit(Event::HostState {
                    host: h.name.clone(),
                    state: crate::report::FinalState::Failed,
                    path: None,
                });
            }
            ctx.reporter.emit(Event::Step {
                host: h.name.clone(),
                step: "build".into(),
                state,
                message,
                duration_ms: Some(elapsed),
            });
            (h.clone(), r)
        })
        .collect()
}

type Realised = BTreeMap<String, Result<Outcome<Built>, String>>;

async fn realise_locally(
    ctx: &Arc<Context>,
    hosts: &[Arc<Host>],
    forced: Option<&str>,
) -> anyhow::Result<Realised> {
    if ctx.interrupt.stopping() {
        bail!("not started: the run was interrupted");
    }
    let built_on = match forced {
        Some(b) => format!("builder:{b}"),
        None => "local".to_string(),
    };
    let already: Vec<bool> = hosts
        .iter()
        .map(|h| to_build(h).iter().all(|(_, out)| Path::new(out).exists()))
        .collect();
    let mut drvs: Vec<String> = hosts
        .iter()
        .flat_map(|h| to_build(h).into_iter().map(|(drv, _)| drv))
        .collect();
    drvs.sort();
    drvs.dedup();
    if drvs.is_empty() {
        return Ok(hosts
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    Ok(Outcome::skipped(
                        built_of(h, &built_on),
                        nothing_to_build(h),
                    )),
                )
            })
            .collect());
    }
    // A redeploy's systems are usually all built already: one cheap validity check (a path on
    // disk may be a leftover Nix has not registered) instead of a `nix build` that loads
    // every derivation to find nothing to do.
    if already.iter().all(|&there| there) && all_valid(hosts).await {
        return Ok(hosts
            .iter()
            .map(|h| {
                let built = built_of(h, &built_on);
                (
                    h.name.to_string(),
                    Ok(Outcome::skipped(built, "already built")),
                )
            })
            .collect());
    }
    let (spec, jobs) = match forced {
        Some(name) => {
            let b = ctx
                .inventory
                .builders
                .get(name)
                .ok_or_else(|| anyhow!("unknown builder `{name}`"))?;
            (Some(builder_spec(b)), Some(0))
        }
        None => {
            // Let Nix send what this machine cannot build to the inventory's builders.
            let all: Vec<String> = ctx.inventory.builders.values().map(builder_spec).collect();
            ((!all.is_empty()).then(|| all.join(" ; ")), None)
        }
    };
    let mut env = Vec::new();
    if spec.is_some() {
        if let Some(cfg) = &ctx.inventory.ssh_config {
            let args = [
                "-F".to_string(),
                cfg.display().to_string(),
                "-o".into(),
                "BatchMode=yes".into(),
            ];
            env = crate::transport::nix_ssh_env(ctx.pool.dir(), "builders", &args)?;
        }
    }
    let argv = ctx.nix.build(&drvs, spec.as_deref(), jobs);
    let reporter = ctx.reporter.clone();
    let on_line = move |stream: Stream, line: &str| {
        if stream == Stream::Stderr {
            reporter.emit(Event::Log {
                host: None,
                step: "build".into(),
                stream: "stderr",
                line: line.to_string(),
            });
        }
    };
    let out = run_local(&argv, &env, &on_line).await?;
    let mut done = BTreeMap::new();
    for (h, was_there) in hosts.iter().zip(already) {
        let wanted = to_build(h);
        let r = match wanted.iter().find(|(_, out)| !Path::new(out).exists()) {
            None if wanted.is_empty() => Ok(Outcome::skipped(
                built_of(h, &built_on),
                nothing_to_build(h),
            )),
            None if was_there => Ok(Outcome::skipped(built_of(h, &built_on), "already built")),
            None => Ok(Outcome::done(built_of(h, &built_on))),
            Some((drv, _)) => {
                Err(build_error(&out.stderr, drv).unwrap_or_else(|| out.error_line()))
            }
        };
        done.insert(h.name.to_string(), r);
    }
    Ok(done)
}

/// Whether every output the hosts need is a valid path of the local store.
async fn all_valid(hosts: &[Arc<Host>]) -> bool {
    let outs: Vec<String> = hosts
        .iter()
        .flat_map(|h| to_build(h).into_iter().map(|(_, out)| out))
        .collect();
    let quiet = |_: Stream, _: &str| {};
    run_local(&crate::nix::validity_argv(&outs), &[], &quiet)
        .await
        .is_ok_and(|out| out.success())
}

/// The `(drv, out)` pairs a host needs built here: its system unless it is prebuilt (or it has
/// none), and every other profile that is not a prebuilt store path.
fn to_build(h: &Host) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    if h.has_system && !h.is_prebuilt() {
        pairs.push((h.drv_path.clone(), h.out_path.clone()));
    }
    for p in h.profiles.iter().filter(|p| !p.drv_path.is_empty()) {
        pairs.push((p.drv_path.clone(), p.out_path.clone()));
    }
    pairs
}

fn built_of(h: &Host, built_on: &str) -> Built {
    Built {
        path: h.out_path.clone(),
        drv: h.drv_path.clone(),
        built_on: built_on.to_string(),
    }
}

fn nothing_to_build(h: &Host) -> &'static str {
    if h.has_system {
        "prebuilt store path: nothing to build"
    } else {
        "no system profile and nothing else to build"
    }
}

/// The line of Nix's output about this derivation failing, if there is one.
fn build_error(stderr: &str, drv: &str) -> Option<String> {
    stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("error") && l.contains(drv))
        .map(|l| l.to_string())
}

async fn build_on_target(ctx: &Context, host: &Host) -> anyhow::Result<Outcome<Built>> {
    let target: Target = ctx.target(host);
    let conn = ctx.pool.get(&target).await?;
    let built = Built {
        path: host.out_path.clone(),
        drv: host.drv_path.clone(),
        built_on: "target".into(),
    };
    let check = format!(
        "nix-store --check-validity {} 2>/dev/null",
        quote(&host.out_path)
    );
    if conn.run(&check, None).await?.success() {
        return Ok(Outcome::skipped(built, "already built on the target"));
    }
    if ctx.options.dry_run {
        return Ok(Outcome::planned(
            built,
            "would copy the derivation and build it on the target",
        ));
    }
    let argv = ctx.nix.copy_to(
        &StoreUri::of(&target),
        std::slice::from_ref(&host.drv_path),
        false,
        true,
    );
    let env = conn.nix_env()?;
    let out = run_local(&argv, &env, &|_, _| {}).await?;
    if !out.success() {
        bail!(
            "copying the derivation to {} failed: {}",
            host.name,
            out.error_line()
        );
    }
    let reporter = ctx.reporter.clone();
    let name = host.name.clone();
    let on_line = move |_: Stream, line: &str| {
        reporter.emit(Event::Log {
            host: Some(name.clone()),
            step: "build".into(),
            stream: "stderr",
            line: line.to_string(),
        });
    };
    let realise = format!("nix-store --realise {}", quote(&host.drv_path));
    let out = conn.run_streaming(&realise, None, &on_line).await?;
    if !out.success() {
        bail!("building on the target failed: {}", out.last_error_line());
    }
    Ok(Outcome::done(built))
}
