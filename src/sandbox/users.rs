//! Non-root logins on sandbox hosts: the `deploy` user, its sudo rule and its standing with the
//! host's own Nix daemon, all in files private to the host (bind-mounted over `/etc/passwd`,
//! `/etc/group`, `/etc/shadow`, `/etc/hosts`, `/etc/sudoers`, `/etc/sudoers.d` and `/home`
//! inside the host's mount namespace), so the machine's own files are never touched.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::sshd::HostDirs;

/// The non-root login every sandbox host has.
pub const LOGIN: &str = "deploy";

/// The file (mode 0600, in the sandbox directory) holding the login's password, which the
/// password-protected sudo rule asks for.
pub const PASSWORD_FILE: &str = "sudo-password";

/// The secret key (in the sandbox directory) whose public half every host's Nix trusts, for
/// signed copies to a login the daemon does not trust (`--sign-with DIR/signing-key.sec`).
pub const SIGNING_KEY: &str = "signing-key.sec";

/// What the login's sudo rule asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SudoRule {
    /// `deploy ALL=(ALL:ALL) NOPASSWD: ALL`.
    #[default]
    NoPassword,
    /// `deploy ALL=(ALL:ALL) ALL`: sudo asks for the login's password.
    Password,
}

/// How a host treats its non-root login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// The sudo rule.
    #[serde(default)]
    pub sudo: SudoRule,
    /// Whether the host's Nix daemon lists the login in `trusted-users`.
    #[serde(default = "yes")]
    pub trusted: bool,
    /// Whether the host runs its own Nix daemon (the login needs one to use the store).
    #[serde(default)]
    pub daemon: bool,
}

fn yes() -> bool {
    true
}

impl Default for Access {
    fn default() -> Self {
        Access {
            sudo: SudoRule::NoPassword,
            trusted: true,
            daemon: false,
        }
    }
}

/// What every host of one sandbox shares: the login's password and the trusted signing key.
pub struct Secrets {
    /// The login's password (`DIR/sudo-password`).
    pub password: String,
    /// The public half of `DIR/signing-key.sec`.
    pub public_key: String,
}

impl Secrets {
    /// Reads (or makes, on first use) the sandbox's password and signing key.
    pub fn ensure(sandbox_dir: &Path) -> anyhow::Result<Secrets> {
        Ok(Secrets {
            password: password(sandbox_dir)?,
            public_key: signing_key(sandbox_dir)?,
        })
    }
}

/// `(machine path, mount point inside the host)` of every private account file.
pub fn mounts(dirs: &HostDirs) -> Vec<(PathBuf, &'static str)> {
    let etc = dirs.root.join("etc");
    vec![
        (etc.join("passwd"), "/etc/passwd"),
        (etc.join("group"), "/etc/group"),
        (etc.join("shadow"), "/etc/shadow"),
        (etc.join("hosts"), "/etc/hosts"),
        (etc.join("sudoers"), "/etc/sudoers"),
        (etc.join("sudoers.d"), "/etc/sudoers.d"),
        (dirs.root.join("home"), "/home"),
    ]
}

/// The sandbox's login password: made once (random), kept in `DIR/sudo-password`.
pub fn password(sandbox_dir: &Path) -> anyhow::Result<String> {
    let path = sandbox_dir.join(PASSWORD_FILE);
    if let Ok(text) = fs::read_to_string(&path) {
        if !text.trim().is_empty() {
            return Ok(text.trim().to_string());
        }
    }
    let mut bytes = [0u8; 12];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("failed to read /dev/urandom")?;
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode_0600()
        .open(&path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(text)
}

/// The public half of the sandbox's signing key, making the key pair on first use.
pub fn signing_key(sandbox_dir: &Path) -> anyhow::Result<String> {
    let secret = sandbox_dir.join(SIGNING_KEY);
    let public = secret.with_extension("pub");
    if let Ok(text) = fs::read_to_string(&public) {
        if secret.exists() && !text.trim().is_empty() {
            return Ok(text.trim().to_string());
        }
    }
    let nix = ["--extra-experimental-features", "nix-command", "key"];
    let out = Command::new("nix")
        .args(nix)
        .args(["generate-secret", "--key-name", "nixdeploy-sandbox-1"])
        .output()
        .context("failed to run nix key generate-secret")?;
    if !out.status.success() {
        bail!(
            "nix key generate-secret failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode_0600()
        .open(&secret)
        .with_context(|| format!("failed to create {}", secret.display()))?;
    file.write_all(&out.stdout)?;
    let mut child = Command::new("nix")
        .args(nix)
        .arg("convert-secret-to-public")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("failed to run nix key convert-secret-to-public")?;
    child
        .stdin
        .take()
        .context("nix stdin")?
        .write_all(&out.stdout)?;
    let converted = child.wait_with_output()?;
    let key = String::from_utf8_lossy(&converted.stdout)
        .trim()
        .to_string();
    if !converted.status.success() || key.is_empty() {
        bail!(
            "nix key convert-secret-to-public failed for {}",
            secret.display()
        );
    }
    fs::write(&public, format!("{key}\n"))?;
    Ok(key)
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// The SHA-512 crypt hash of `password` (`openssl passwd -6`, password on stdin).
fn hash(password: &str) -> anyhow::Result<String> {
    let mut child = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to run openssl (Debian package openssl) to hash the sandbox password")?;
    child
        .stdin
        .take()
        .context("openssl stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "openssl passwd failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The first id from 1000 up that no line of `passwd`/`group` text uses (field 3).
fn free_id(text: &str) -> u32 {
    let used: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    (1000..).find(|id| !used.contains(id)).unwrap_or(1000)
}

/// The host's sudoers, with Debian's defaults (`use_pty` included): nothing logged to the
/// machine's syslog (a log in the host's `/run` instead), no lecture, no DNS lookups of the
/// hostname.
const SUDOERS: &str = "# Written by `nixdeploy sandbox up`.\n\
Defaults env_reset\n\
Defaults use_pty\n\
Defaults secure_path=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
Defaults !syslog\n\
Defaults logfile=/run/sudo.log\n\
Defaults lecture=never\n\
Defaults !fqdn\n\
root ALL=(ALL:ALL) ALL\n\
@includedir /etc/sudoers.d\n";

/// The login's sudo rule.
pub fn sudo_rule(rule: SudoRule) -> String {
    match rule {
        SudoRule::NoPassword => format!("{LOGIN} ALL=(ALL:ALL) NOPASSWD: ALL\n"),
        SudoRule::Password => format!("{LOGIN} ALL=(ALL:ALL) ALL\n"),
    }
}

/// The `nix.conf` lines that decide whom the host's daemon trusts, and which signatures.
pub fn nix_conf_lines(access: &Access, public_key: &str) -> String {
    let trusted = if access.trusted {
        format!("root {LOGIN}")
    } else {
        "root".to_string()
    };
    format!("trusted-users = {trusted}\ntrusted-public-keys = {public_key}\n")
}

/// Writes the host's account files: the machine's users (every password locked with `*`, so
/// none of the machine's hashes are copied) plus the login, its group, hash, home and rule.
pub fn prepare(dirs: &HostDirs, name: &str, access: &Access, password: &str) -> anyhow::Result<()> {
    let etc = dirs.root.join("etc");
    let sudoers_d = etc.join("sudoers.d");
    let home = dirs.root.join("home");
    for d in [&sudoers_d, &home] {
        fs::create_dir_all(d).with_context(|| format!("failed to create {}", d.display()))?;
    }
    fs::set_permissions(&sudoers_d, fs::Permissions::from_mode(0o750))?;
    let machine_passwd = fs::read_to_string("/etc/passwd").context("failed to read /etc/passwd")?;
    let machine_group = fs::read_to_string("/etc/group").context("failed to read /etc/group")?;
    let machine_passwd: String = machine_passwd
        .lines()
        .filter(|l| !l.starts_with(&format!("{LOGIN}:")))
        .map(|l| format!("{l}\n"))
        .collect();
    let machine_group: String = machine_group
        .lines()
        .filter(|l| !l.starts_with(&format!("{LOGIN}:")))
        .map(|l| format!("{l}\n"))
        .collect();
    let uid = free_id(&machine_passwd);
    let gid = free_id(&machine_group);
    let passwd = format!(
        "{machine_passwd}{LOGIN}:x:{uid}:{gid}:nixdeploy sandbox login:/home/{LOGIN}:/bin/sh\n"
    );
    let group = format!("{machine_group}{LOGIN}:x:{gid}:\n");
    let mut shadow: String = passwd
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter(|user| *user != LOGIN)
        .map(|user| format!("{user}:*:19000:0:99999:7:::\n"))
        .collect();
    shadow.push_str(&format!("{LOGIN}:{}:19000:0:99999:7:::\n", hash(password)?));
    write_mode(&etc.join("passwd"), &passwd, 0o644)?;
    write_mode(&etc.join("group"), &group, 0o644)?;
    write_mode(&etc.join("shadow"), &shadow, 0o600)?;
    write_mode(
        &etc.join("hosts"),
        &format!("127.0.0.1 localhost\n127.0.1.1 {name}\n"),
        0o644,
    )?;
    write_mode(&etc.join("sudoers"), SUDOERS, 0o440)?;
    let marker = dirs.etc_nix().join("daemon");
    if access.daemon {
        write_mode(
            &marker,
            "# the sandbox starts this host's nix-daemon\n",
            0o644,
        )?;
    } else if marker.exists() {
        fs::remove_file(&marker)?;
    }
    write_mode(&sudoers_d.join(LOGIN), &sudo_rule(access.sudo), 0o440)?;
    let login_home = home.join(LOGIN);
    fs::create_dir_all(&login_home)?;
    chown(&login_home, Some(uid), Some(gid))
        .with_context(|| format!("failed to chown {}", login_home.display()))?;
    Ok(())
}

/// Replaces `path` with `text` and sets its mode; bind mounts of files see the new content
/// only when the file is rewritten in place, which is what this does when it exists.
fn write_mode(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("failed to set the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_gets_the_first_free_id() {
        assert_eq!(free_id("root:x:0:0::/root:/bin/sh\n"), 1000);
        assert_eq!(free_id("a:x:1000:1000::/:/bin/sh\nb:x:1001:1:::\n"), 1002);
    }

    #[test]
    fn the_rules_and_trust_follow_the_access() {
        assert!(sudo_rule(SudoRule::NoPassword).contains("NOPASSWD"));
        assert!(!sudo_rule(SudoRule::Password).contains("NOPASSWD"));
        let untrusted = Access {
            trusted: false,
            ..Access::default()
        };
        assert!(nix_conf_lines(&Access::default(), "k:1").contains("trusted-users = root deploy"));
        let conf = nix_conf_lines(&untrusted, "k:1");
        assert!(conf.starts_with("trusted-users = root\n"));
        assert!(conf.contains("trusted-public-keys = k:1\n"));
    }
}
