//! Privilege escalation on a target: how a command that must run as root (or as another user)
//! is wrapped when the ssh login is not that user (`sudo -H --`, `doas`, `run0`, ...), and the
//! sudo password a run may carry.

use super::quote::{command_line, quote};

/// The escalation tool of one host, as an argv prefix; empty when the login is root.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Escalation {
    /// The tool and its options, e.g. `["sudo", "-H", "--"]`; empty for none.
    pub argv: Vec<String>,
}

/// The default tool for a login that is not root.
pub const DEFAULT_ESCALATION: [&str; 3] = ["sudo", "-H", "--"];

/// The escalation tools nixdeploy knows how to keep from prompting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `sudo`: `-n` never prompts; `-S -p ''` reads the password from stdin.
    Sudo,
    /// OpenBSD's `doas` (and opendoas): `-n` never prompts; passwords only from a terminal.
    Doas,
    /// systemd's `run0`: `--no-ask-password`; passwords only through polkit agents.
    Run0,
    /// Anything else: run as configured, with stdin closed.
    Other,
}

/// How an escalated command gets past the tool's password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The rule needs no password: the tool must never prompt (`sudo -n`).
    NoPassword,
    /// The password is the first line of the command's stdin (`sudo -k -S -p ''`); `-k`
    /// ignores cached credentials so the tool reads it every time, and the rest of stdin
    /// reaches the command untouched.
    Password,
}

impl Escalation {
    /// The escalation for a login: `configured` when the inventory sets one, the default
    /// `sudo -H --` for a non-root login, none for root (or a login left to the ssh config,
    /// which is assumed to be root, as before escalation existed).
    pub fn for_login(login: Option<&str>, configured: Option<Vec<String>>) -> Escalation {
        match (login, configured) {
            (_, Some(argv)) => Escalation { argv },
            (Some(user), None) if user != "root" => Escalation {
                argv: DEFAULT_ESCALATION.iter().map(|s| s.to_string()).collect(),
            },
            _ => Escalation::default(),
        }
    }

    /// deploy-rs's fields: `sshUser` logs in, `user` is who the profile is deployed as, and
    /// `sudo` (default `"sudo -u"`) is the command that becomes `user`, followed by the user.
    /// No escalation when both are the same user.
    pub fn from_deploy_rs(
        ssh_user: Option<&str>,
        user: Option<&str>,
        sudo: Option<&str>,
    ) -> Escalation {
        let user = user.unwrap_or("root");
        if ssh_user.unwrap_or("root") == user {
            return Escalation::default();
        }
        let mut argv: Vec<String> = sudo
            .unwrap_or("sudo -u")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        argv.push(user.to_string());
        Escalation { argv }
    }

    /// colmena's `targetUser` and `privilegeEscalationCommand` (default `sudo -H --`); colmena
    /// escalates only when the login is not root.
    pub fn from_colmena(target_user: Option<&str>, command: Option<Vec<String>>) -> Escalation {
        match target_user {
            Some(user) if user != "root" => Escalation::for_login(Some(user), command),
            _ => Escalation::default(),
        }
    }

    /// Whether commands run as the login itself.
    pub fn is_none(&self) -> bool {
        self.argv.is_empty()
    }

    /// Which tool `argv[0]` is (by its file name, so `/run/wrappers/bin/sudo` is sudo).
    pub fn tool(&self) -> Tool {
        let name = self
            .argv
            .first()
            .map(|p| p.rsplit('/').next().unwrap_or(p))
            .unwrap_or("");
        match name {
            "sudo" => Tool::Sudo,
            "doas" => Tool::Doas,
            "run0" => Tool::Run0,
            _ => Tool::Other,
        }
    }

    /// The tool's name, for messages.
    pub fn name(&self) -> &str {
        self.argv.first().map(String::as_str).unwrap_or("")
    }

    /// Whether the tool can take a password from nixdeploy (over stdin).
    pub fn reads_password_from_stdin(&self) -> bool {
        self.tool() == Tool::Sudo
    }

    /// The argv with the options that keep the tool from ever prompting on a terminal.
    fn argv_for(&self, feed: Feed, ignore_cache: bool) -> Vec<String> {
        let flags: &[&str] = match (self.tool(), feed) {
            (Tool::Sudo, Feed::Password) => &["-k", "-S", "-p", ""],
            (Tool::Sudo, Feed::NoPassword) if ignore_cache => &["-k", "-n"],
            (Tool::Sudo | Tool::Doas, Feed::NoPassword) => &["-n"],
            (Tool::Run0, _) => &["--no-ask-password"],
            _ => &[],
        };
        let mut argv = self.argv.clone();
        let at = 1.min(argv.len());
        argv.splice(at..at, flags.iter().map(|f| f.to_string()));
        argv
    }

    /// The shell command that runs `script` (a shell script) as root through this escalation,
    /// with the tool kept from prompting (see [`Feed`]).
    pub fn wrap(&self, script: &str, feed: Feed) -> String {
        if self.is_none() {
            return script.to_string();
        }
        format!(
            "{} sh -c {}",
            command_line(&self.argv_for(feed, false)),
            quote(script)
        )
    }

    /// The command that checks whether the tool lets the login in without a password,
    /// ignoring credentials sudo may have cached.
    pub fn probe_without_password(&self) -> String {
        format!(
            "{} sh -c true",
            command_line(&self.argv_for(Feed::NoPassword, true))
        )
    }

    /// The shell command that runs `script` as root, as configured (no options added).
    pub fn root(&self, script: &str) -> String {
        if self.is_none() {
            return script.to_string();
        }
        format!("{} sh -c {}", command_line(&self.argv), quote(script))
    }
}

/// Bytes that are overwritten with zeros when dropped (the sudo password, and any stdin
/// that carries it). Never printed: `Debug` shows only the length.
#[derive(Clone, Default)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Takes ownership of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The password line (`password\n`) followed by `rest`, as one stdin.
    pub fn line_then(&self, rest: Option<&[u8]>) -> Secret {
        let rest = rest.unwrap_or_default();
        let mut all = Vec::with_capacity(self.0.len() + 1 + rest.len());
        all.extend_from_slice(&self.0);
        all.push(b'\n');
        all.extend_from_slice(rest);
        Secret(all)
    }
}

/// A growing secret (bytes being typed): zeroed when dropped, like [`Secret`].
pub struct SecretBuf(Secret);

impl SecretBuf {
    /// Appends a byte.
    pub fn push(&mut self, byte: u8) {
        (self.0).0.push(byte);
    }

    /// The finished secret.
    pub fn into_secret(mut self) -> Secret {
        // Moves the buffer out (no copy); what stays behind is empty.
        Secret(std::mem::take(&mut (self.0).0))
    }
}

impl SecretBuf {
    /// An empty buffer with room for `capacity` bytes, so typing never reallocates (which
    /// would leave an unzeroed copy behind).
    pub fn with_capacity(capacity: usize) -> SecretBuf {
        SecretBuf(Secret(Vec::with_capacity(capacity)))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Volatile writes are not optimised away, unlike a plain fill before the free.
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference into the vector.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::assert_valid_shell;

    #[test]
    fn root_and_unset_logins_run_commands_as_they_are() {
        assert!(Escalation::for_login(Some("root"), None).is_none());
        assert!(Escalation::for_login(None, None).is_none());
        assert_eq!(Escalation::default().root("id -u"), "id -u");
        assert_eq!(Escalation::default().wrap("id -u", Feed::Password), "id -u");
    }

    #[test]
    fn a_non_root_login_escalates_with_sudo_by_default() {
        let e = Escalation::for_login(Some("deploy"), None);
        assert_eq!(e.argv, ["sudo", "-H", "--"]);
        let line = e.root("echo 'a b' > /run/x");
        assert_eq!(line, "sudo -H -- sh -c 'echo '\\''a b'\\'' > /run/x'");
        assert_valid_shell(&line);
    }

    #[test]
    fn a_configured_tool_wins_even_for_root() {
        let e = Escalation::for_login(Some("root"), Some(vec!["doas".into()]));
        assert_eq!(e.root("true"), "doas sh -c true");
    }

    #[test]
    fn sudo_never_prompts_and_takes_the_password_from_stdin() {
        let e = Escalation::for_login(Some("deploy"), None);
        assert_eq!(e.wrap("true", Feed::NoPassword), "sudo -n -H -- sh -c true");
        let fed = e.wrap("id -u", Feed::Password);
        assert_eq!(fed, "sudo -k -S -p '' -H -- sh -c 'id -u'");
        assert_valid_shell(&fed);
        assert_eq!(e.probe_without_password(), "sudo -k -n -H -- sh -c true");
    }

    #[test]
    fn doas_and_run0_get_their_own_non_interactive_options() {
        let doas = Escalation::for_login(Some("deploy"), Some(vec!["doas".into()]));
        assert_eq!(doas.tool(), Tool::Doas);
        assert_eq!(doas.wrap("true", Feed::NoPassword), "doas -n sh -c true");
        assert!(!doas.reads_password_from_stdin());
        let run0 = Escalation::for_login(Some("deploy"), Some(vec!["run0".into()]));
        assert_eq!(
            run0.wrap("true", Feed::NoPassword),
            "run0 --no-ask-password sh -c true"
        );
        let wrapped = Escalation::for_login(Some("d"), Some(vec!["/run/wrappers/bin/sudo".into()]));
        assert_eq!(wrapped.tool(), Tool::Sudo);
    }

    #[test]
    fn deploy_rs_escalates_only_when_the_ssh_user_differs_from_the_profile_user() {
        assert!(Escalation::from_deploy_rs(Some("root"), None, None).is_none());
        assert!(Escalation::from_deploy_rs(None, Some("root"), None).is_none());
        let e = Escalation::from_deploy_rs(Some("deploy"), None, None);
        assert_eq!(e.argv, ["sudo", "-u", "root"]);
        let e = Escalation::from_deploy_rs(Some("deploy"), Some("root"), Some("doas -u"));
        assert_eq!(e.argv, ["doas", "-u", "root"]);
        assert_eq!(
            e.wrap("true", Feed::NoPassword),
            "doas -n -u root sh -c true"
        );
    }

    #[test]
    fn colmena_escalates_non_root_logins_with_its_command() {
        assert!(Escalation::from_colmena(Some("root"), Some(vec!["doas".into()])).is_none());
        assert!(Escalation::from_colmena(None, None).is_none());
        assert_eq!(
            Escalation::from_colmena(Some("deploy"), None).argv,
            ["sudo", "-H", "--"]
        );
        assert_eq!(
            Escalation::from_colmena(Some("deploy"), Some(vec!["doas".into()])).argv,
            ["doas"]
        );
    }

    #[test]
    fn secrets_hide_their_bytes_and_prefix_stdin_with_the_password_line() {
        let s = Secret::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "Secret(7 bytes)");
        assert_eq!(s.line_then(Some(b"data")).expose(), b"hunter2\ndata");
        assert_eq!(s.line_then(None).expose(), b"hunter2\n");
    }
}
