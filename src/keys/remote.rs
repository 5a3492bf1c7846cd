//! Uploading keys to hosts: stage every key of a host (final mode and owner set before any
//! content; content over stdin only), then rename them all into place in one command.

use std::sync::Arc;

use anyhow::{anyhow, bail};

use super::{KeySpec, Secret};
use crate::context::Context;
use crate::fleet::Host;
use crate::report::Level;
use crate::steps::{fan_out, HostResult, Outcome};
use crate::transport::quote;

/// What was uploaded to one host.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Uploaded {
    /// Destination paths, in spec order.
    pub keys: Vec<String>,
    /// Keys left owned by root until their owner exists (after activation).
    pub pending_owner: Vec<String>,
}

/// The remote half of staging one key (see its comments): a root-owned 0700 directory made
/// inside `dest_dir` by `mkdir`, which never follows links, so the key's owner cannot redirect
/// what root writes, chmods or chowns even when it can write `dest_dir`.
const STAGE_SH: &str = include_str!("stage.sh");
/// The remote half of putting staged keys in place (`swap`) or dropping them (`discard`).
const SWAP_SH: &str = include_str!("swap.sh");

/// What the staging script reported, parsed once where the text arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StageReply {
    /// Staged in `dir` (relative to `dest_dir`); `owned` when the owner exists already.
    Staged { owned: bool, dir: String },
    /// A directory on the way can be changed by someone other than root (`why` says how).
    Unsafe { why: String },
    /// The staging directory was swapped under us (someone else writes `dest_dir`).
    Moved { path: String },
}

impl StageReply {
    fn parse(stdout: &str) -> Option<StageReply> {
        let line = stdout.lines().rev().find(|l| !l.trim().is_empty())?;
        let (word, rest) = line.split_once(' ')?;
        match word {
            "staged" => {
                let (owner, dir) = rest.split_once(' ')?;
                let owned = match owner {
                    "owned" => true,
                    "pending-owner" => false,
                    _ => return None,
                };
                Some(StageReply::Staged {
                    owned,
                    dir: dir.to_string(),
                })
            }
            "unsafe" => Some(StageReply::Unsafe {
                why: rest.to_string(),
            }),
            "moved" => Some(StageReply::Moved {
                path: rest.to_string(),
            }),
            _ => None,
        }
    }
}

/// One key, staged on its host: where, so it can be renamed into place or discarded.
#[derive(Debug, Clone)]
struct Staged<'a> {
    spec: &'a KeySpec,
    dir: String,
}

/// Stages one key: vets `dest_dir` (unless `insecure_dest_dir`), creates a private staging
/// directory in it, creates the file with its final mode and owner, then reads the content
/// from stdin. A single shell script, so a privilege wrapper can run it as one command.
pub fn stage_command(spec: &KeySpec) -> String {
    format!(
        "d={d}; n={n}; mode={mode:04o}; u={u}; g={g}; insecure={insecure}\n{STAGE_SH}",
        d = quote(&spec.dest_dir),
        n = quote(&spec.name),
        mode = spec.permissions,
        u = quote(&spec.user),
        g = quote(&spec.group),
        insecure = u8::from(spec.insecure_dest_dir),
    )
}

fn staged_call(function: &str, staged: &[Staged]) -> String {
    let calls: Vec<String> = staged
        .iter()
        .map(|s| {
            format!(
                "{function} {} {} {}",
                quote(&s.spec.dest_dir),
                quote(&s.dir),
                quote(&s.spec.name)
            )
        })
        .collect();
    format!("{SWAP_SH}\n{}\n", calls.join("\n"))
}

/// Renames every staged key into place (each rename is atomic and replaces, never follows,
/// whatever is at the destination) in one command.
fn swap_command(staged: &[Staged]) -> String {
    staged_call("swap", staged)
}

/// Removes staged keys after a failure, so no partial set is left behind.
fn discard_command(staged: &[Staged]) -> String {
    staged_call("discard", staged)
}

/// Gives a key its owner once the owner exists. Only the file nixdeploy left there is
/// changed: a regular file, not a link, owned by root, with one name (a hard link to another
/// file would carry the chown over to it); `chown -h` never follows a link. Prints `owned`,
/// `missing` (no such owner yet) or `replaced` (the key is no longer the file we wrote).
pub fn chown_command(dest: &str, user: &str, group: &str) -> String {
    format!(
        "p={p}; if ! id -u {u} >/dev/null 2>&1 || ! getent group {g} >/dev/null 2>&1; then echo missing; \
         elif [ -L \"$p\" ] || [ ! -f \"$p\" ] || [ \"$(stat -c '%u %h' -- \"$p\")\" != '0 1' ]; then echo replaced; \
         else chown -h {u}:{g} -- \"$p\" && echo owned; fi",
        u = quote(user),
        g = quote(group),
        p = quote(dest)
    )
}

/// The keys destined for one host, contents already read.
pub type HostKeys = Arc<Vec<(KeySpec, Secret)>>;

/// Uploads each host's keys. Contents were read before any host is contacted.
pub async fn upload(
    ctx: &Arc<Context>,
    items: Vec<(Arc<Host>, HostKeys)>,
) -> Vec<HostResult<Uploaded>> {
    let hosts: Vec<Arc<Host>> = items.iter().map(|(h, _)| h.clone()).collect();
    let by_host: Arc<std::collections::HashMap<String, HostKeys>> = Arc::new(
        items
            .into_iter()
            .map(|(h, k)| (h.name.to_string(), k))
            .collect(),
    );
    let c = ctx.clone();
    fan_out(ctx, &hosts, "upload_key", move |host| {
        let (ctx, by_host) = (c.clone(), by_host.clone());
        async move {
            let keys = by_host.get(host.name.as_str()).cloned().unwrap_or_default();
            upload_one(&ctx, &host, &keys).await
        }
    })
    .await
}

async fn upload_one(
    ctx: &Context,
    host: &Host,
    keys: &[(KeySpec, Secret)],
) -> anyhow::Result<Outcome<Uploaded>> {
    let mut done = Uploaded {
        keys: keys.iter().map(|(s, _)| s.dest()).collect(),
        pending_owner: Vec::new(),
    };
    if ctx.options.dry_run {
        return Ok(Outcome::planned(
            done.clone(),
            format!("would upload {}", done.keys.join(", ")),
        ));
    }
    crate::activation::lock(ctx, host).await?;
    let conn = ctx.pool.get(&ctx.target(host)).await?;
    let mut staged: Vec<Staged> = Vec::new();
    let result = async {
        for (spec, secret) in keys {
            let out = conn.run(&stage_command(spec), Some(&secret.0)).await?;
            match StageReply::parse(&out.stdout) {
                Some(StageReply::Staged { owned, dir }) if out.success() => {
                    staged.push(Staged { spec, dir });
                    if !owned {
                        done.pending_owner.push(spec.dest());
                    }
                }
                Some(StageReply::Unsafe { why }) => bail!(
                    "refusing to install key {} on {}: {why}, so a non-root user could redirect \
                     the files root writes there; make every directory on the way owned by root \
                     and not writable by group or others, or set `insecure_dest_dir: true` on the key",
                    spec.dest(),
                    host.name
                ),
                Some(StageReply::Moved { path }) => bail!(
                    "staging key {} on {} failed: the staging directory {path} was replaced while \
                     in use (another user can write {}); nothing was installed",
                    spec.dest(),
                    host.name,
                    spec.dest_dir
                ),
                _ => bail!(
                    "staging key {} on {} failed: {}",
                    spec.dest(),
                    host.name,
                    out.last_error_line()
                ),
            }
        }
        let out = conn.run(&swap_command(&staged), None).await?;
        if !out.success() {
            match out.last_error_line().strip_prefix("moved ") {
                Some(path) => bail!(
                    "putting keys in place on {} failed: the staging directory {path} was \
                     replaced while in use (another user can write its directory); nothing more \
                     was installed",
                    host.name
                ),
                None => bail!(
                    "putting keys in place on {} failed: {}",
                    host.name,
                    out.last_error_line()
                ),
            }
        }
        Ok(())
    }
    .await;
    if let Err(err) = result {
        if !staged.is_empty() {
            let _ = conn.run(&discard_command(&staged), None).await;
        }
        return Err(err);
    }
    for (spec, _) in keys {
        if done.pending_owner.contains(&spec.dest()) {
            ctx.pending_owners
                .lock()
                .unwrap()
                .entry(host.name.clone())
                .or_default()
                .push((spec.dest(), spec.user.clone(), spec.group.clone()));
        }
    }
    if done.pending_owner.is_empty() {
        Ok(Outcome::done(done))
    } else {
        let msg = format!(
            "{} owned by root until activation creates their owner",
            done.pending_owner.join(", ")
        );
        ctx.reporter
            .message(Level::Warn, format!("{}: {msg}", host.name));
        Ok(Outcome::done(done.clone()).with_message(msg))
    }
}

/// After activation: gives keys uploaded before their owner existed to that owner; an owner
/// still missing is an error.
pub async fn fix_owners(ctx: &Context, host: &Host) -> anyhow::Result<()> {
    let pending = ctx
        .pending_owners
        .lock()
        .unwrap()
        .remove(&host.name)
        .unwrap_or_default();
    if pending.is_empty() {
        return Ok(());
    }
    let conn = ctx.pool.get(&ctx.target(host)).await?;
    let mut missing = Vec::new();
    for (dest, user, group) in pending {
        let out = conn.run(&chown_command(&dest, &user, &group), None).await?;
        match out.stdout.trim() {
            "owned" => {}
            "replaced" => bail!(
                "the key {dest} on {} was replaced before its owner could be set (it is no \
                 longer the root-owned file nixdeploy wrote); its owner was left alone",
                host.name
            ),
            _ => missing.push(format!("{dest} ({user}:{group})")),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "after activation the owners of {} still do not exist on {}",
            missing.join(", "),
            host.name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> KeySpec {
        KeySpec::parse(
            &serde_json::json!({ "name": name, "text": "x", "permissions": "0640", "user": "app" }),
            None,
        )
        .unwrap()
    }

    #[test]
    fn staging_sets_mode_and_owner_before_content() {
        let cmd = stage_command(&spec("app.key"));
        let chmod = cmd.find("chmod \"$mode\"").unwrap();
        let chown = cmd.find("chown -h").unwrap();
        let cat = cmd.find("cat >").unwrap();
        assert!(chmod < cat && chown < cat);
        assert!(cmd.starts_with("d=/run/keys; n=app.key; mode=0640; u=app; g=root; insecure=0\n"));
    }

    #[test]
    fn stage_replies_are_parsed_once() {
        assert_eq!(
            StageReply::parse("staged owned .nixdeploy-stage.Ab12\n"),
            Some(StageReply::Staged {
                owned: true,
                dir: ".nixdeploy-stage.Ab12".into()
            })
        );
        assert_eq!(
            StageReply::parse("staged pending-owner .x y\n"),
            Some(StageReply::Staged {
                owned: false,
                dir: ".x y".into()
            })
        );
        assert_eq!(
            StageReply::parse("unsafe /run/keys/app is owned by uid 1000\n"),
            Some(StageReply::Unsafe {
                why: "/run/keys/app is owned by uid 1000".into()
            })
        );
        assert_eq!(StageReply::parse("garbage"), None);
    }

    #[test]
    fn all_keys_are_swapped_in_one_command() {
        let (a, b) = (spec("a"), spec("b"));
        let staged = [
            Staged {
                spec: &a,
                dir: ".s1".into(),
            },
            Staged {
                spec: &b,
                dir: ".s 2".into(),
            },
        ];
        let cmd = swap_command(&staged);
        assert!(cmd.contains("\nswap /run/keys .s1 a\nswap /run/keys '.s 2' b\n"));
        assert!(discard_command(&staged).contains("\ndiscard /run/keys .s1 a\n"));
    }

    #[test]
    fn commands_are_valid_shell() {
        let k = spec("k");
        let staged = [Staged {
            spec: &k,
            dir: ".s".into(),
        }];
        for script in [
            stage_command(&k),
            swap_command(&staged),
            discard_command(&staged),
            chown_command("/run/keys/k", "app", "app"),
        ] {
            crate::transport::assert_valid_shell(&script);
        }
    }

    /// The owner is only set on the file nixdeploy wrote: never through a link or a second name.
    #[test]
    fn setting_a_late_owner_refuses_links_and_extra_names() {
        let dir = tempfile::tempdir().unwrap();
        let run = |path: &std::path::Path| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(chown_command(&path.display().to_string(), "root", "root"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let target = dir.path().join("target");
        std::fs::write(&target, "x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(run(&link), "replaced");
        let hard = dir.path().join("hard");
        std::fs::hard_link(&target, &hard).unwrap();
        assert_eq!(run(&hard), "replaced");
        if unsafe { libc::getuid() } == 0 {
            let own = dir.path().join("own");
            std::fs::write(&own, "x").unwrap();
            assert_eq!(run(&own), "owned");
        }
    }

    /// The scripts run for real against a temporary directory tree (no root needed to vet).
    #[test]
    fn a_destination_writable_by_others_is_refused_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let mut k = KeySpec::parse(
            &serde_json::json!({ "name": "k", "text": "x", "dest_dir": open.join("keys").display().to_string() }),
            None,
        )
        .unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(stage_command(&k))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let reply = StageReply::parse(&String::from_utf8_lossy(&out.stdout));
        assert!(
            matches!(&reply, Some(StageReply::Unsafe { why }) if why.contains("writable by everyone")),
            "{reply:?}"
        );
        assert!(!open.join("keys").exists());
        k.insecure_dest_dir = true;
        assert!(stage_command(&k).contains("insecure=1"));
    }
}
