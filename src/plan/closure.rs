//! Querying a closure: argv builders for `nix path-info` / `nix-store`, and parsers for their output.

use anyhow::{bail, Context};
use serde_json::Value;

use super::diff::StorePathInfo;

/// `nix path-info --json --recursive PATH`, reading from `store` (`ssh-ng://root@web-1`)
/// when given and from the local store otherwise. The same argv, without a store, is what
/// to run *on* a host to read its closure there.
pub fn path_info_argv(path: &str, store: Option<&str>) -> Vec<String> {
    let mut argv: Vec<String> = ["nix", "--extra-experimental-features", "nix-command"]
        .map(String::from)
        .to_vec();
    argv.push("path-info".into());
    if let Some(store) = store {
        argv.extend(["--store".into(), store.into()]);
    }
    argv.extend(["--json".into(), "--recursive".into(), path.into()]);
    argv
}

/// `nix-store --query --requisites PATH`: the closure, one path per line. For hosts whose
/// Nix lacks the `nix` command; pair it with [`sizes_argv`].
pub fn requisites_argv(path: &str) -> Vec<String> {
    ["nix-store", "--query", "--requisites", path]
        .map(String::from)
        .to_vec()
}

/// `nix-store --query --size` over the paths on stdin (see [`paths_on_stdin`]): the NAR size of
/// each, one per line, in order. A closure never goes on a command line: past a few thousand
/// paths it exceeds the kernel's limit for one argument.
pub fn sizes_command() -> String {
    stdin_xargs(&["nix-store", "--query", "--size"])
}

/// `nix-store --check-validity --print-invalid` over the paths on stdin: those the store lacks.
pub fn invalid_paths_command() -> String {
    stdin_xargs(&["nix-store", "--check-validity", "--print-invalid"])
}

/// Runs `argv` with the NUL-separated paths from stdin appended, as many at a time as fit
/// (`xargs -0` keeps their order; `-r` runs nothing for no paths).
fn stdin_xargs(argv: &[&str]) -> String {
    format!("xargs -0 -r {}", crate::transport::command_line(argv))
}

/// The stdin of [`sizes_command`] and [`invalid_paths_command`]: each path NUL-terminated.
pub fn paths_on_stdin<S: AsRef<str>>(paths: &[S]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for p in paths {
        bytes.extend_from_slice(p.as_ref().as_bytes());
        bytes.push(0);
    }
    bytes
}

/// Parses `nix path-info --json` output: an array of objects with `path` and `narSize`
/// (Nix 2.8 up to 2.18) or an object keyed by path (Nix 2.19 and later). Other fields are
/// ignored; a path the store reports as not valid is an error.
pub fn parse_path_info_json(json: &str) -> anyhow::Result<Vec<StorePathInfo>> {
    let value: Value =
        serde_json::from_str(json).context("failed to parse `nix path-info --json` output")?;
    match value {
        Value::Array(entries) => entries
            .iter()
            .map(|entry| {
                let path = entry
                    .get("path")
                    .and_then(Value::as_str)
                    .context("a `nix path-info` entry has no `path`")?;
                entry_info(path, entry)
            })
            .collect(),
        Value::Object(entries) => entries
            .iter()
            .map(|(path, entry)| entry_info(path, entry))
            .collect(),
        _ => bail!("`nix path-info --json` printed neither an array nor an object"),
    }
}

/// One entry of `nix path-info --json`, given its path.
fn entry_info(path: &str, entry: &Value) -> anyhow::Result<StorePathInfo> {
    if entry.is_null() || entry.get("valid").and_then(Value::as_bool) == Some(false) {
        bail!("store path {path} is not valid in the queried store");
    }
    let nar_size = entry
        .get("narSize")
        .and_then(Value::as_u64)
        .with_context(|| format!("`nix path-info` gave no `narSize` for {path}"))?;
    Ok(StorePathInfo {
        path: path.to_string(),
        nar_size,
    })
}

/// Parses the paths printed by [`requisites_argv`].
pub fn parse_requisites(output: &str) -> Vec<String> {
    output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect()
}

/// Joins the paths of [`requisites_argv`] with the sizes of [`sizes_command`] run on them.
pub fn parse_sizes(paths: &[String], sizes_output: &str) -> anyhow::Result<Vec<StorePathInfo>> {
    let sizes: Vec<&str> = sizes_output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if sizes.len() != paths.len() {
        bail!(
            "`nix-store --query --size` printed {got} sizes for {want} paths",
            got = sizes.len(),
            want = paths.len()
        );
    }
    paths
        .iter()
        .zip(sizes)
        .map(|(path, size)| {
            let nar_size = size
                .parse()
                .with_context(|| format!("`nix-store --query --size` gave {size:?} for {path}"))?;
            Ok(StorePathInfo {
                path: path.clone(),
                nar_size,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Nix 2.8.0 printed for a one-file derivation referring to a busybox directory.
    const NIX_2_8_OUTPUT: &str = r#"[{"path":"/nix/store/2raac275ma78k0yqv8kcydpsdj8cqn6h-tiny-1.2.3","narHash":"sha256-Sv39IjyLL08D0hqANFayCgB3D9mK0aYVjhZMiurqobU=","narSize":520,"references":["/nix/store/d0x4sjwksanirbaxlb05009gy5lvia3q-bb"],"deriver":"/nix/store/d1rcs297wfrf5bfh6zkljlz4f2cp6p00-tiny-1.2.3.drv","registrationTime":1796161038,"ultimate":true},{"path":"/nix/store/d0x4sjwksanirbaxlb05009gy5lvia3q-bb","narHash":"sha256-SUza0DfPfQp17oFvwGC5JmPeEwlgKv9DwvnOVdreTEA=","narSize":1982736,"references":[],"ca":"fixed:r:sha256:0h2cvvd5bkprq91zyak0149xwqr6p5hc0vw1xrshlzfg6z8dlk29","registrationTime":1796160607}]"#;

    #[test]
    fn path_info_argv_asks_for_the_recursive_closure_as_json() {
        assert_eq!(
            path_info_argv("/nix/store/x-a", None).join(" "),
            "nix --extra-experimental-features nix-command path-info --json --recursive /nix/store/x-a"
        );
        assert_eq!(
            path_info_argv("/nix/store/x-a", Some("ssh-ng://root@web-1")).join(" "),
            "nix --extra-experimental-features nix-command path-info --store ssh-ng://root@web-1 \
             --json --recursive /nix/store/x-a"
        );
    }

    #[test]
    fn nix_store_argvs_query_requisites_then_sizes() {
        assert_eq!(
            requisites_argv("/nix/store/x-a"),
            ["nix-store", "--query", "--requisites", "/nix/store/x-a"]
        );
        assert_eq!(sizes_command(), "xargs -0 -r nix-store --query --size");
        assert_eq!(
            paths_on_stdin(&["/nix/store/x-a", "/nix/store/y-b"]),
            b"/nix/store/x-a\0/nix/store/y-b\0"
        );
    }

    /// Many more paths than fit in one argument go through a real `xargs`, in order.
    #[test]
    fn thousands_of_paths_pass_through_stdin_in_order() {
        let paths: Vec<String> = (0..20_000)
            .map(|i| format!("/nix/store/{i:032}-p"))
            .collect();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(stdin_xargs(&["printf", "%s\\n"]))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let input = paths_on_stdin(&paths);
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success());
        let got: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(got, paths);
    }

    #[test]
    fn nix_2_8_path_info_json_is_an_array_of_objects() {
        let infos = parse_path_info_json(NIX_2_8_OUTPUT).unwrap();
        assert_eq!(
            infos,
            vec![
                StorePathInfo {
                    path: "/nix/store/2raac275ma78k0yqv8kcydpsdj8cqn6h-tiny-1.2.3".into(),
                    nar_size: 520
                },
                StorePathInfo {
                    path: "/nix/store/d0x4sjwksanirbaxlb05009gy5lvia3q-bb".into(),
                    nar_size: 1_982_736
                },
            ]
        );
    }

    #[test]
    fn newer_path_info_json_is_an_object_keyed_by_path() {
        let json = r#"{"/nix/store/x-a": {"narSize": 7, "references": []}}"#;
        assert_eq!(
            parse_path_info_json(json).unwrap(),
            vec![StorePathInfo {
                path: "/nix/store/x-a".into(),
                nar_size: 7
            }]
        );
    }

    #[test]
    fn invalid_paths_and_malformed_output_are_errors_that_name_the_path() {
        let err =
            parse_path_info_json(r#"[{"path": "/nix/store/x-a", "valid": false}]"#).unwrap_err();
        assert!(err.to_string().contains("/nix/store/x-a"), "{err}");
        let err = parse_path_info_json(r#"{"/nix/store/x-a": null}"#).unwrap_err();
        assert!(err.to_string().contains("/nix/store/x-a"), "{err}");
        assert!(parse_path_info_json("not json").is_err());
        assert!(parse_path_info_json(r#"[{"path": "/nix/store/x-a"}]"#).is_err());
    }

    #[test]
    fn nix_store_output_joins_paths_with_their_sizes() {
        let paths = parse_requisites("/nix/store/x-a\n/nix/store/y-b\n");
        let infos = parse_sizes(&paths, "10\n20\n").unwrap();
        assert_eq!(infos[1].nar_size, 20);
        assert!(parse_sizes(&paths, "10\n").is_err());
        assert!(parse_sizes(&paths, "10\nabc\n").is_err());
    }

    /// Runs the real `nix` on a file added to the store; skipped where Nix is not installed.
    #[test]
    fn the_installed_nix_prints_json_that_parses() {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nixdeploy-closure-probe");
        std::fs::write(&file, "probe\n").unwrap();
        let Ok(added) = Command::new("nix-store").arg("--add").arg(&file).output() else {
            eprintln!("nix-store not found; skipping");
            return;
        };
        assert!(added.status.success(), "{added:?}");
        let path = String::from_utf8(added.stdout).unwrap().trim().to_string();
        let argv = path_info_argv(&path, None);
        let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let infos = parse_path_info_json(&String::from_utf8(out.stdout).unwrap()).unwrap();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].path, path);
        assert!(infos[0].nar_size > 0);
    }
}
