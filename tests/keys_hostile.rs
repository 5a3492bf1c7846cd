//! Keys against a hostile destination: the key's owner can write `dest_dir` and races symlinks
//! into it while root installs the key. The install is refused by default; with
//! `insecure_dest_dir: true` it may fail, but no file outside `dest_dir` ever changes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, run, runbook, Sandbox};

/// The attacker: an ordinary account, the owner of the key (the sandbox hosts share the
/// machine's /etc/passwd, so creating it here creates it on the host).
const ATTACKER: &str = "nd-keyowner";

fn ensure_attacker_account() {
    let exists = |name: &str| Command::new("id").arg("-u").arg(name).output().unwrap();
    if !exists(ATTACKER).status.success() {
        // Another test process may create it at the same moment: only the end result matters.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                ATTACKER,
            ])
            .status();
    }
    assert!(
        exists(ATTACKER).status.success(),
        "cannot create the account {ATTACKER}"
    );
}

fn ssh_ok(sb: &Sandbox, host: &str, cmd: &str) -> String {
    let out = sb.ssh(host, cmd);
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Owner, mode, size and content digest of every file under the host's private /root and the
/// canaries: what must never change.
fn fingerprint(sb: &Sandbox) -> String {
    ssh_ok(
        sb,
        "h1",
        "cd /root && find . -xdev \\( -type f -o -type d -o -type l \\) -printf '%p %U:%G %m %s %y %l\\n' | sort; \
         for f in /root/canary-shadow /root/canary-dir/f; do printf '%s ' \"$f\"; cksum < \"$f\"; done",
    )
}

/// The attacker's loop, run on the host as the key's owner inside its `dest_dir`: every round
/// it moves any staging directory aside and leaves a link to a root-only directory in its place,
/// and points the key's destination and the old fixed staging name at a root-only file.
const ATTACK: &str = r#"cd /run/keys/victim || exit 1
i=0
while [ ! -e /run/attacker-stop ]; do
    i=$((i + 1))
    for f in .nixdeploy-stage.*; do
        [ -L "$f" ] && continue
        [ -e "$f" ] || continue
        mv -f "$f" "stolen-$i" 2>/dev/null && ln -s /root/canary-dir "$f" 2>/dev/null
    done
    ln -sfn /root/canary-shadow app.key 2>/dev/null
    ln -sfn /root/canary-shadow .app.key.nixdeploy-new 2>/dev/null
    echo "$i" > rounds
done
echo "$i" > rounds.final"#;

#[test]
fn a_key_owner_racing_symlinks_into_dest_dir_cannot_change_any_file_outside_it() {
    if !common::skip_unless_root() {
        return;
    }
    ensure_attacker_account();
    let sb = Sandbox::up(1);
    ssh_ok(
        &sb,
        "h1",
        &format!(
            "set -e; umask 077; mkdir -p /root/canary-dir; echo 'root:$6$canary:19000:0:99999:7:::' > /root/canary-shadow; \
             echo canary > /root/canary-dir/f; chmod 0600 /root/canary-shadow; \
             mkdir -p -m 0751 /run/keys; mkdir -p /run/keys/victim; chown {ATTACKER}:{ATTACKER} /run/keys/victim; chmod 0755 /run/keys/victim; \
             rm -f /run/attacker-stop"
        ),
    );
    let before = fingerprint(&sb);
    assert!(before.contains("./canary-shadow 0:0 600"), "{before}");

    // The attacker runs on the host as the key's owner, detached, until told to stop.
    let script = sb.dir().parent().unwrap().join("attack.sh");
    std::fs::write(&script, ATTACK).unwrap();
    ssh_ok(
        &sb,
        "h1",
        &format!(
            "setsid setpriv --reuid={ATTACKER} --regid={ATTACKER} --clear-groups sh {} </dev/null >/dev/null 2>&1 &",
            script.display()
        ),
    );
    let rounds = sb.host_root("h1").join("run/keys/victim/rounds");
    assert!(
        eventually(Duration::from_secs(20), || rounds.exists()),
        "the attacker never started"
    );

    let book = |insecure: bool| {
        runbook(
            &sb,
            "hostile.rhai",
            &format!(
                r#"let r = upload_key(hosts(), #{{ name: "app.key", text: "s3cret", user: "{ATTACKER}", group: "{ATTACKER}", permissions: "0400", dest_dir: "/run/keys/victim", insecure_dest_dir: {insecure} }});
if !r.ok {{ throw "upload failed"; }}"#
            ),
        )
    };

    // By default the destination is refused: its owner is not root.
    let refused = run(&sb, &book(false), &[]);
    refused.assert_failure();
    refused.assert_stderr_contains("refusing to install key /run/keys/victim/app.key on h1");
    refused.assert_stderr_contains("is owned by uid");
    refused.assert_stderr_contains("insecure_dest_dir");

    // Opted in: each attempt may fail (the attacker moves the staging directory), but root
    // never writes, chmods or chowns anything the attacker pointed it at.
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        let out = run(&sb, &book(true), &[]);
        assert!(
            out.code() == Some(0) || out.stderr.contains("was replaced while in use"),
            "{out}"
        );
        outcomes.push(out.code());
    }
    std::fs::write(sb.host_root("h1").join("run/attacker-stop"), "").unwrap();
    let last = sb.host_root("h1").join("run/keys/victim/rounds.final");
    assert!(
        eventually(Duration::from_secs(20), || {
            std::fs::read_to_string(&last).is_ok_and(|t| t.ends_with('\n'))
        }),
        "the attacker never stopped"
    );
    let attacked_rounds: u64 = std::fs::read_to_string(&last)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        attacked_rounds > 10,
        "the attacker barely ran: {attacked_rounds}"
    );

    let after = fingerprint(&sb);
    assert_eq!(before, after, "a file outside dest_dir changed");
    // Whatever the attacker managed to move aside is still root's, private and unreadable to it.
    let leftovers = ssh_ok(
        &sb,
        "h1",
        "cd /run/keys/victim && for f in stolen-*; do [ -e \"$f\" ] && stat -c '%n %U %a' \"$f\"; done; true",
    );
    for line in leftovers.lines() {
        assert!(line.ends_with(" root 700"), "{line}");
    }
    eprintln!("attacker rounds: {attacked_rounds}; opted-in runs exited with {outcomes:?}");
}
