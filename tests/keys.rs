//! Secrets end to end: keys land with exact content, owner and mode, are replaced atomically,
//! never leak into output, state, process lists or stores, and bad specs touch no host.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{run, runbook, Sandbox};

/// A long secret nobody could find by accident.
fn random_secret() -> String {
    let mut buf = [0u8; 32];
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// `owner:group mode` of a file as the host itself reports it.
fn stat_on_host(sb: &Sandbox, host: &str, path: &str) -> String {
    let out = sb.ssh(host, &format!("stat -c '%U:%G %a' {path}"));
    assert!(out.status.success(), "stat {path} on {host}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether `needle` occurs in any file under `dir` (symlinks not followed).
fn grep_tree(dir: &Path, needle: &str) -> Vec<String> {
    let out = Command::new("grep")
        .args(["-rlsF", "--", needle])
        .arg(dir)
        .output()
        .expect("run grep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn pre_activation_keys_land_with_exact_content_owner_group_and_mode_and_leak_nowhere() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let secret = random_secret();
    let other = random_secret();
    let secret_file = sb.dir().parent().unwrap().join("nobody.secret");
    fs::write(&secret_file, format!("{other}\n")).unwrap();
    let book = runbook(
        &sb,
        "keys.rhai",
        &format!(
            r#"
let a = upload_key(hosts(), #{{ name: "root.key", text: "{secret}", user: "root", group: "root", permissions: "0640" }});
let b = upload_key(hosts(), #{{ name: "nobody.key", file: "{file}", user: "nobody", group: "nogroup", permissions: "0400", dest_dir: "/run/keys/app" }});
if !a.ok || !b.ok {{ throw "upload failed"; }}
"#,
            file = secret_file.display()
        ),
    );

    // Sample the process list for the whole run: the secret must never be on a command line.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, needles) = (stop.clone(), [secret.clone(), other.clone()]);
        std::thread::spawn(move || {
            let mut samples = 0;
            let mut leaks = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let ps = Command::new("ps")
                    .args(["-eo", "args"])
                    .output()
                    .expect("ps");
                let text = String::from_utf8_lossy(&ps.stdout).into_owned();
                leaks.extend(
                    text.lines()
                        .filter(|l| needles.iter().any(|n| l.contains(n.as_str())))
                        .map(str::to_owned),
                );
                samples += 1;
            }
            (samples, leaks)
        })
    };
    let out = run(&sb, &book, &["--json"]);
    stop.store(true, Ordering::Relaxed);
    let (samples, leaks) = sampler.join().unwrap();
    out.assert_success();

    let keys = sb.host_root("h1").join("run/keys");
    assert_eq!(fs::read_to_string(keys.join("root.key")).unwrap(), secret);
    assert_eq!(
        fs::read_to_string(keys.join("app/nobody.key")).unwrap(),
        format!("{other}\n")
    );
    assert_eq!(
        stat_on_host(&sb, "h1", "/run/keys/root.key"),
        "root:root 640"
    );
    assert_eq!(
        stat_on_host(&sb, "h1", "/run/keys/app/nobody.key"),
        "nobody:nogroup 400"
    );
    let leftovers: Vec<_> = fs::read_dir(&keys)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().contains("nixdeploy-new")),
        "{leftovers:?}"
    );

    assert!(samples > 0);
    assert!(leaks.is_empty(), "secret on a command line: {leaks:?}");
    for needle in [&secret, &other] {
        assert!(
            !out.stdout.contains(needle.as_str()) && !out.stderr.contains(needle.as_str()),
            "secret in output: {out}"
        );
        assert_eq!(
            grep_tree(sb.state_dir(), needle),
            Vec::<String>::new(),
            "secret in the state dir"
        );
        assert_eq!(
            grep_tree(&sb.host_root("h1").join("nix/store"), needle),
            Vec::<String>::new(),
            "secret in the host's store"
        );
        assert_eq!(
            grep_tree(Path::new("/nix/store"), needle),
            Vec::<String>::new(),
            "secret in the local store"
        );
    }
}

#[test]
fn replacing_a_key_is_atomic_for_readers_on_the_host() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let dir = sb.dir().parent().unwrap().to_path_buf();
    let size = 8 << 20;
    let (old, new) = (dir.join("old.key"), dir.join("new.key"));
    fs::write(&old, vec![b'o'; size]).unwrap();
    fs::write(&new, vec![b'n'; size]).unwrap();
    let cksum = |p: &Path| {
        let out = Command::new("cksum").arg(p).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let (old_sum, new_sum) = (cksum(&old), cksum(&new));
    let upload = |file: &Path| {
        runbook(
            &sb,
            "big.rhai",
            &format!(
                r#"let r = upload_key(hosts(), #{{ name: "big.key", file: "{}" }}); if !r.ok {{ throw "upload failed"; }}"#,
                file.display()
            ),
        )
    };
    run(&sb, &upload(&old), &[]).assert_success();

    // A reader on the host checksums the key in a loop into /run/reads until told to stop.
    let reader = {
        let cfg = sb.ssh_config();
        std::thread::spawn(move || {
            Command::new("ssh")
                .arg("-F")
                .arg(cfg)
                .arg("h1")
                .arg("rm -f /run/stop-reader /run/reads; while [ ! -e /run/stop-reader ]; do cksum < /run/keys/big.key >> /run/reads; done")
                .output()
                .expect("ssh reader")
        })
    };
    let reads_file = sb.host_root("h1").join("run/reads");
    let ready = Instant::now() + Duration::from_secs(20);
    while fs::read_to_string(&reads_file).map_or(true, |t| t.lines().count() < 3) {
        assert!(Instant::now() < ready, "the reader on h1 never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    run(&sb, &upload(&new), &[]).assert_success();
    let seen_new = Instant::now() + Duration::from_secs(20);
    while !fs::read_to_string(&reads_file)
        .unwrap_or_default()
        .contains(&new_sum)
    {
        assert!(
            Instant::now() < seen_new,
            "the reader never saw the new key"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::write(sb.host_root("h1").join("run/stop-reader"), "").unwrap();
    reader.join().unwrap();
    let reads: Vec<String> = fs::read_to_string(&reads_file)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect();
    assert!(reads.contains(&old_sum), "the reader never saw the old key");
    assert!(reads.contains(&new_sum), "the reader never saw the new key");
    let torn: Vec<_> = reads
        .iter()
        .filter(|s| **s != old_sum && **s != new_sum)
        .collect();
    assert!(
        torn.is_empty(),
        "a reader saw a partial key {} times out of {}",
        torn.len(),
        reads.len()
    );
}

#[test]
fn a_key_whose_owner_does_not_exist_is_uploaded_as_root_with_a_warning() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let book = runbook(
        &sb,
        "orphan.rhai",
        r#"upload_key(hosts(), #{ name: "orphan.key", text: "x", user: "nixdeploy-nosuchuser", group: "nixdeploy-nosuchgroup", permissions: "0600" });"#,
    );
    let out = run(&sb, &book, &[]);
    out.assert_success();
    assert_eq!(
        stat_on_host(&sb, "h1", "/run/keys/orphan.key"),
        "root:root 600"
    );
    assert!(
        out.stderr
            .contains("owned by root until activation creates their owner"),
        "{out}"
    );
}

#[test]
fn each_invalid_key_spec_fails_with_its_own_message_and_touches_no_host() {
    if !common::skip_unless_root() {
        return;
    }
    let sb = Sandbox::up(1);
    let cases = [
        (r#"name: "a/b", text: "x""#, "must be a plain file name"),
        (
            r#"name: "k", text: "x", dest_dir: "run/keys""#,
            "must be an absolute path",
        ),
        (
            r#"name: "k", text: "x", permissions: "0999""#,
            "must be octal",
        ),
        (
            r#"name: "k", text: "x", permissions: "4755""#,
            "wider than 0777",
        ),
        (
            r#"name: "k", text: "x", file: "/etc/hostname""#,
            "not several",
        ),
        (
            r#"name: "k", file: "/nonexistent/nixdeploy.key""#,
            "cannot read /nonexistent/nixdeploy.key",
        ),
        (
            r#"name: "k", command: ["sh", "-c", "exit 1"]"#,
            "exited with",
        ),
    ];
    for (i, (spec, message)) in cases.iter().enumerate() {
        let book = runbook(
            &sb,
            &format!("bad{i}.rhai"),
            &format!("upload_key(hosts(), #{{ {spec} }});"),
        );
        let out = run(&sb, &book, &[]);
        out.assert_code(3);
        assert!(
            out.stderr.contains(message),
            "{spec}: expected {message:?}: {out}"
        );
        assert!(
            !sb.host_root("h1").join("run/keys").exists(),
            "{spec} created /run/keys"
        );
    }
}
