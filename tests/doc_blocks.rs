//! Every code block in README.md and docs/*.md marked runnable (` ```sh runnable`,
//! ` ```rhai runnable`) runs against a sandbox fleet and succeeds (docs/cli.md defines the marker).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Sandbox;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A runnable block: where it is, its language and its text.
struct Block {
    at: String,
    lang: String,
    text: String,
}

fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![Path::new(ROOT).join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(Path::new(ROOT).join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The runnable blocks of `file`, in order.
fn runnable_blocks(file: &Path) -> Vec<Block> {
    let text = fs::read_to_string(file).unwrap();
    let name = file.strip_prefix(ROOT).unwrap().display().to_string();
    let mut blocks = Vec::new();
    let mut open: Option<(String, usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut open {
            None => {
                let Some(info) = line.strip_prefix("```") else {
                    continue;
                };
                let words: Vec<&str> = info.split_whitespace().collect();
                if words.len() == 2 && words[1] == "runnable" {
                    assert!(
                        matches!(words[0], "sh" | "rhai"),
                        "{name}:{}: only sh and rhai blocks can be runnable",
                        i + 1
                    );
                    open = Some((words[0].to_string(), i + 1, String::new()));
                } else {
                    // Any other fence opens a block that is not run; skip to its end.
                    open = Some((String::new(), i + 1, String::new()));
                }
            }
            Some((lang, start, body)) => {
                if line.starts_with("```") {
                    if !lang.is_empty() {
                        blocks.push(Block {
                            at: format!("{name}:{start}"),
                            lang: lang.clone(),
                            text: body.clone(),
                        });
                    }
                    open = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    blocks
}

#[test]
fn the_marker_finds_blocks_in_several_docs() {
    let all: Vec<Block> = doc_files()
        .iter()
        .flat_map(|f| runnable_blocks(f))
        .collect();
    let files: std::collections::BTreeSet<&str> = all
        .iter()
        .map(|b| b.at.split(':').next().unwrap())
        .collect();
    assert!(files.len() >= 4, "runnable blocks only in {files:?}");
    assert!(all.iter().any(|b| b.lang == "sh") && all.iter().any(|b| b.lang == "rhai"));
}

#[test]
fn every_runnable_block_in_the_docs_runs_against_a_sandbox() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(3);
    let flake_dir = sb.dir().join("flake");
    std::os::unix::fs::symlink(Path::new(ROOT).join("runbooks"), flake_dir.join("runbooks"))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(common::BIN, bin.join("nixdeploy")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut ran = 0;
    for file in doc_files() {
        for (n, block) in runnable_blocks(&file).into_iter().enumerate() {
            let mut cmd = match block.lang.as_str() {
                "sh" => {
                    let mut c = Command::new("bash");
                    c.args(["-e", "-o", "pipefail", "-c", &block.text]);
                    c
                }
                _ => {
                    let script = work.path().join(format!("block-{ran}-{n}.rhai"));
                    fs::write(&script, &block.text).unwrap();
                    let mut c = Command::new(common::BIN);
                    c.arg("run").arg(&script).args(["--flake", ".", "--yes"]);
                    c
                }
            };
            let out = cmd
                .current_dir(&flake_dir)
                .env("PATH", &path)
                .env("NIXDEPLOY_STATE_DIR", sb.state_dir())
                .env_remove("NIXDEPLOY_PATH")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} ({}) failed: {:?}\n{}\nstdout:\n{}\nstderr:\n{}",
                block.at,
                block.lang,
                out.status,
                block.text,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        }
    }
    assert!(ran >= 6, "only {ran} runnable blocks ran");
}
