//! Evaluating a flake's inventory: resolving the flake reference, the metadata pass (one
//! `nix eval --json` that touches no toplevel) and one toplevel-pass `nix eval` of some hosts.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde_json::Value;

use crate::exit::Failure;

/// The Nix expression that reads the inventory (embedded, so the binary is self-contained).
const INVENTORY_NIX: &str = include_str!("inventory.nix");

/// The environment variable that hands the flake reference to `inventory.nix`.
const FLAKE_ENV: &str = "NIXDEPLOY_FLAKE";
/// The hosts whose toplevels `inventory.nix` evaluates (a JSON list; unset: the metadata pass).
const HOSTS_ENV: &str = "NIXDEPLOY_HOSTS";
/// Whether `inventory.nix` turns a throwing host into a `failed` marker.
const CATCH_ENV: &str = "NIXDEPLOY_CATCH";

/// The version of the inventory expression, for the evaluation cache's keys: a hash of its
/// text, so any change to what it produces invalidates what it produced before.
pub fn expression_version() -> String {
    format!(
        "{:016x}",
        super::eval_cache::fnv1a(INVENTORY_NIX.as_bytes())
    )
}

/// How many lines of an unrecognised nix error are shown.
const TAIL_LINES: usize = 15;

/// A flake reference ready for `builtins.getFlake`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeRef {
    /// What Nix is given (`path:/abs`, `git+file:///repo?dir=sub`, `github:o/r`).
    pub nix_ref: String,
    /// The flake's directory on this machine, when it is local.
    pub local_dir: Option<PathBuf>,
    /// The directory Nix copies to the store as the flake's source (the git root for
    /// `git+file`), so store paths in nix errors can be shown as the user's own files.
    pub source_root: Option<PathBuf>,
}

/// Resolves what the user typed: a reference with `:` or `#` goes to Nix as it is; anything
/// else is a directory holding `flake.nix`, given to Nix as `git+file` inside a git work tree
/// (so, as with the nix CLI, only tracked files count) and as `path:` otherwise.
pub fn resolve(flake: &str) -> anyhow::Result<FlakeRef> {
    if flake.contains(':') || flake.contains('#') {
        // A plain `path:DIR` is copied to the store as DIR itself, so its store paths in nix
        // errors map back to DIR's files (a `git+file` source root is the repository's).
        let plain_path = flake.starts_with("path:") && !flake.contains(['?', '#']);
        return Ok(FlakeRef {
            nix_ref: flake.to_string(),
            local_dir: local_dir_of(flake),
            source_root: local_dir_of(flake).filter(|_| plain_path),
        });
    }
    let dir = Path::new(flake);
    let abs = dir.canonicalize().map_err(|err| {
        Failure::input(format!(
            "flake directory '{flake}' cannot be read ({err}); pass --flake with a directory that holds flake.nix"
        ))
    })?;
    if !abs.join("flake.nix").is_file() {
        return Err(Failure::input(format!(
            "'{flake}' has no flake.nix; pass --flake with the directory of your flake"
        ))
        .into());
    }
    let root = git_root(&abs);
    let nix_ref = match &root {
        Some(root) => {
            let sub = abs.strip_prefix(root).unwrap_or(Path::new(""));
            let mut r = format!("git+file://{}", url_path(root));
            if !sub.as_os_str().is_empty() {
                r.push_str(&format!("?dir={}", url_path(sub)));
            }
            r
        }
        None => format!("path:{}", url_path(&abs)),
    };
    Ok(FlakeRef {
        nix_ref,
        source_root: Some(root.unwrap_or_else(|| abs.clone())),
        local_dir: Some(abs),
    })
}

/// The local directory behind a reference, without touching the file system.
pub fn local_dir_of(flake: &str) -> Option<PathBuf> {
    if let Some(rest) = flake.strip_prefix("path:") {
        return Some(PathBuf::from(rest.split(['?', '#']).next()?));
    }
    if let Some(rest) = flake.strip_prefix("git+file://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut dir = PathBuf::from(path.split('#').next()?);
        if let Some(sub) = query.split('&').find_map(|kv| kv.strip_prefix("dir=")) {
            dir.push(sub.split('#').next()?);
        }
        return Some(dir);
    }
    if flake.contains(':') || flake.contains('#') {
        return None;
    }
    Some(PathBuf::from(flake))
}

/// The work tree that holds `dir`, if any (`.git` is a directory, or a file in a worktree).
fn git_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

/// A path as it may appear in a flake URL: reserved characters percent-encoded.
fn url_path(path: &Path) -> String {
    let mut out = String::new();
    for byte in path.to_string_lossy().bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' | b'+' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// The arguments of the one `nix` process that evaluates the inventory.
pub fn eval_args() -> Vec<String> {
    [
        "--extra-experimental-features",
        "nix-command flakes",
        // Evaluation must never build: refuse import-from-derivation.
        "--option",
        "allow-import-from-derivation",
        "false",
        "eval",
        "--json",
        "--impure",
        "--show-trace",
        "--expr",
        INVENTORY_NIX,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs the metadata pass and returns its JSON; nix errors become input errors with nix's
/// own message, trimmed, and the host and field it was evaluating.
pub fn evaluate(flake: &str, reference: &FlakeRef) -> anyhow::Result<Value> {
    let output = Command::new("nix")
        .args(eval_args())
        .env(FLAKE_ENV, &reference.nix_ref)
        .env_remove(HOSTS_ENV)
        .env_remove(CATCH_ENV)
        .output()
        .context("failed to run `nix eval`; is nix installed and on PATH?")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut summary = summarize_nix_error(&stderr);
        if let Some(root) = &reference.source_root {
            summary = unstore_source(&summary, root);
        }
        let mut message = format!("failed to evaluate the inventory of flake '{flake}'{summary}");
        let missing = stderr.contains("does not exist") || stderr.contains("No such file");
        if reference.nix_ref.starts_with("git+file:") && missing {
            message.push_str(
                "\n  note: the flake is in a git work tree, so nix only sees files git tracks; `git add` them",
            );
        }
        return Err(Failure::input(message).into());
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("failed to read the JSON of `nix eval` for flake '{flake}'"))
}

/// The prefix of the stderr line on which the toplevel pass announces one host's entry.
const ENTRY_LINE: &str = "@@nixdeploy-entry ";

/// Runs the toplevel pass for `hosts`: their entries with toplevels evaluated, or Nix's
/// stderr. With several hosts, one that throws comes back as a `failed` marker instead. Each
/// host's entry also goes to `on_entry` the moment Nix has evaluated it (Nix announces it on
/// stderr), so a batch's first hosts are known while its last ones are still evaluated — also
/// when a later host of the batch makes the evaluation fail.
pub fn evaluate_hosts(
    reference: &FlakeRef,
    hosts: &[String],
    on_entry: &mut dyn FnMut(String, Value),
) -> Result<Value, String> {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let list = serde_json::to_string(hosts).map_err(|e| e.to_string())?;
    let mut child = Command::new("nix")
        .args(eval_args())
        .env(FLAKE_ENV, &reference.nix_ref)
        .env(HOSTS_ENV, list)
        .env(CATCH_ENV, if hosts.len() > 1 { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("error: failed to run `nix eval` ({e}); is nix installed and on PATH?")
        })?;
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("error: `nix eval` started without its output pipes".into());
    };
    let (status, stdout, stderr) = std::thread::scope(|scope| {
        // stdout is read apart: Nix writes it at the end, and a full pipe would stall it.
        let out = scope.spawn(move || {
            let mut buf = Vec::new();
            stdout.read_to_end(&mut buf).map(|_| buf)
        });
        let mut messages = String::new();
        for line in BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            match line
                .find(ENTRY_LINE)
                .map(|at| &line[at + ENTRY_LINE.len()..])
            {
                Some(json) => {
                    if let Ok(mut v) = serde_json::from_str::<Value>(json) {
                        if let Some(host) = v["host"].as_str().map(str::to_string) {
                            on_entry(host, v["entry"].take());
                        }
                    }
                }
                None => {
                    messages.push_str(&line);
                    messages.push('\n');
                }
            }
        }
        let status = child.wait();
        let stdout = out.join().unwrap_or_else(|_| Ok(Vec::new()));
        (status, stdout, messages)
    });
    let ok = status.map_err(|e| format!("error: `nix eval` could not be waited for: {e}"))?;
    if !ok.success() {
        return Err(stderr);
    }
    let stdout = stdout.map_err(|e| format!("error: failed to read `nix eval`'s output: {e}"))?;
    serde_json::from_slice(&stdout)
        .map_err(|e| format!("error: failed to read the JSON of `nix eval`: {e}"))
}

/// A host's evaluation error as shown in its failed `evaluate` step: Nix's message with the
/// field it was evaluating and the position, store paths shown as the user's files.
pub fn host_error(reference: &FlakeRef, stderr: &str) -> String {
    let mut summary = summarize_nix_error(stderr);
    if let Some(root) = &reference.source_root {
        summary = unstore_source(&summary, root);
    }
    format!("failed to evaluate{summary}")
}

/// `(in host web-1, field toplevel): <nix's error> (at <position>)`, from `--show-trace` output.
pub fn summarize_nix_error(stderr: &str) -> String {
    let clean = strip_ansi(stderr);
    let lines: Vec<&str> = clean.lines().collect();
    let Some(start) = lines.iter().position(|l| l.starts_with("error:")) else {
        let tail: Vec<&str> = lines.iter().rev().take(TAIL_LINES).rev().copied().collect();
        return format!(": nix said:\n{}", tail.join("\n"));
    };
    let mut error = lines[start].trim_start_matches("error:").trim().to_string();
    for line in &lines[start + 1..] {
        let line = line.trim();
        if line.is_empty() || line.starts_with('…') || line.starts_with("at ") {
            break;
        }
        error.push(' ');
        error.push_str(line);
    }
    let trace = &lines[start + 1..];
    let context = trace
        .iter()
        .find_map(|l| l.trim().strip_prefix("… nixdeploy-context: "))
        .map(|c| format!(" (in {c})"))
        .unwrap_or_default();
    let position = trace
        .iter()
        .find_map(|l| l.trim().strip_prefix("at "))
        .filter(|p| !p.starts_with('«'))
        .map(|p| format!(" (at {})", p.trim_end_matches(':')))
        .unwrap_or_default();
    format!("{context}: {error}{position}")
}

/// Replaces `/nix/store/<hash>-source/` with the local source directory.
fn unstore_source(text: &str, root: &Path) -> String {
    const STORE: &str = "/nix/store/";
    const HASH_LEN: usize = 32;
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(STORE) {
        out.push_str(&rest[..at]);
        let after = &rest[at + STORE.len()..];
        // Bytes, not `str` slices: the text is Nix's error, which may hold any UTF-8, and
        // slicing a `str` inside a character panics. 32 ASCII bytes end on a boundary.
        let hashed = after
            .as_bytes()
            .get(..HASH_LEN)
            .is_some_and(|h| h.iter().all(u8::is_ascii_alphanumeric))
            && after[HASH_LEN..].starts_with("-source/");
        if hashed {
            out.push_str(&format!("{}/", root.display()));
            rest = &after[HASH_LEN + "-source/".len()..];
        } else {
            out.push_str(STORE);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences end with a letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_text_after_a_store_prefix_does_not_panic() {
        let root = Path::new("/src");
        // A multi-byte character straddles byte 32 after the prefix.
        let text = format!("/nix/store/{}é-source/x and /nix/store/ü", "a".repeat(31));
        assert_eq!(unstore_source(&text, root), text);
        let hashed = format!("error: «{}-source/flake.nix» ünïcode", "b".repeat(32));
        let hashed = hashed.replace("«", "/nix/store/");
        assert_eq!(
            unstore_source(&hashed, root),
            "error: /src/flake.nix» ünïcode"
        );
        let summary =
            summarize_nix_error("error: schlüssel «ß» fehlt\n       at /nix/store/é:1:2:\n");
        assert!(summary.contains("schlüssel"), "{summary}");
    }

    #[test]
    fn references_with_a_scheme_or_fragment_pass_through() {
        let r = resolve("github:owner/repo").unwrap();
        assert_eq!(r.nix_ref, "github:owner/repo");
        assert_eq!(r.local_dir, None);
        assert_eq!(
            local_dir_of("git+file:///repo?dir=sub&ref=main"),
            Some(PathBuf::from("/repo/sub"))
        );
        assert_eq!(local_dir_of("path:/a/b?x=1"), Some(PathBuf::from("/a/b")));
        // Errors from a plain `path:` flake point at the user's files, not the store copy.
        assert_eq!(
            resolve("path:/a/b").unwrap().source_root,
            Some(PathBuf::from("/a/b"))
        );
        assert_eq!(resolve("path:/a/b?dir=c").unwrap().source_root, None);
        assert_eq!(resolve("github:owner/repo").unwrap().source_root, None);
    }

    #[test]
    fn a_directory_without_flake_nix_is_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(dir.path().to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("has no flake.nix"), "{err}");
        let err = resolve("/definitely/not/here").unwrap_err();
        assert!(err.to_string().contains("cannot be read"), "{err}");
    }

    #[test]
    fn a_plain_directory_becomes_a_path_reference() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("flake.nix"), "{ outputs = _: { }; }").unwrap();
        let r = resolve(dir.path().to_str().unwrap()).unwrap();
        let abs = dir.path().canonicalize().unwrap();
        assert_eq!(r.nix_ref, format!("path:{}", abs.display()));
        assert_eq!(r.local_dir, Some(abs));
    }

    #[test]
    fn url_paths_escape_spaces_and_query_characters() {
        assert_eq!(url_path(Path::new("/a b/c?d#e")), "/a%20b/c%3Fd%23e");
    }

    #[test]
    fn eval_never_builds() {
        let args = eval_args();
        let at = args
            .iter()
            .position(|a| a == "allow-import-from-derivation");
        assert_eq!(args[at.unwrap() + 1], "false");
        assert!(args.iter().any(|a| a == "--impure"));
    }

    #[test]
    fn nix_errors_keep_the_message_context_and_position() {
        let stderr = "warning: Git tree '/x' is dirty\n\u{1b}[31;1merror:\u{1b}[0m web-1 is broken\n\n       … while evaluating the attribute 'toplevel'\n\n       at /nix/store/abc-source/flake.nix:3:49:\n\n            2| x\n\n       … nixdeploy-context: host web-1, field toplevel\n\n       at «string»:1:2:\n";
        assert_eq!(
            summarize_nix_error(stderr),
            " (in host web-1, field toplevel): web-1 is broken (at /nix/store/abc-source/flake.nix:3:49)"
        );
    }

    #[test]
    fn store_copies_of_the_flake_read_as_local_paths() {
        let text =
            " (at /nix/store/0ccnxa25whszw7mgbgyzdm4nqc0zwnm8-source/flake.nix:3:4) /nix/store/x";
        assert_eq!(
            unstore_source(text, Path::new("/src/fleet")),
            " (at /src/fleet/flake.nix:3:4) /nix/store/x"
        );
    }

    #[test]
    fn unrecognised_nix_output_is_shown_as_is() {
        assert_eq!(summarize_nix_error("boom\n"), ": nix said:\nboom");
    }
}
