//! Privilege escalation on a target: how a command that must run as root (or as another user)
//! is wrapped when the ssh login is not that user (`sudo -H --`, `doas`, `run0`, ...).

use super::quote::{command_line, quote};

/// The escalation tool of one host, as an argv prefix; empty when the login is root.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Escalation {
    /// The tool and its options, e.g. `["sudo", "-H", "--"]`; empty for none.
    pub argv: Vec<String>,
}

/// The default tool for a login that is not root.
pub const DEFAULT_ESCALATION: [&str; 3] = ["sudo", "-H", "--"];

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

    /// Whether commands run as the login itself.
    pub fn is_none(&self) -> bool {
        self.argv.is_empty()
    }

    /// The shell command that runs `script` (a shell script) as root through this escalation.
    pub fn root(&self, script: &str) -> String {
        if self.is_none() {
            return script.to_string();
        }
        format!("{} sh -c {}", command_line(&self.argv), quote(script))
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
}
