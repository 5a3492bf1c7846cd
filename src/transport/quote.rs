//! The one helper that quotes every argument that reaches a remote shell.

/// Quotes `arg` for a POSIX shell: plain words stay as they are, anything else is
/// wrapped in single quotes with embedded single quotes escaped as `'\''`.
pub fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if plain {
        return arg.to_string();
    }
    let mut quoted = String::with_capacity(arg.len() + 2);
    quoted.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// Joins `argv` into one shell command line, quoting every word.
pub fn command_line<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Test helper: panics unless `/bin/sh -n` accepts `script` (every remote script is checked).
#[cfg(test)]
pub fn assert_valid_shell(script: &str) {
    let out = std::process::Command::new("sh")
        .arg("-n")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_are_left_alone() {
        assert_eq!(quote("/nix/store/abc-foo-1.0"), "/nix/store/abc-foo-1.0");
        assert_eq!(quote("switch"), "switch");
    }

    #[test]
    fn empty_string_becomes_empty_quotes() {
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn shell_metacharacters_are_quoted() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote("x;y"), "'x;y'");
        assert_eq!(quote("*"), "'*'");
    }

    #[test]
    fn single_quotes_are_escaped() {
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn command_line_quotes_each_word() {
        assert_eq!(command_line(&["echo", "a b", "c"]), "echo 'a b' c");
    }

    #[test]
    fn quoted_words_survive_a_real_shell() {
        let nasty = "a'b\"c $HOME `x` \\ \n end";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote(nasty)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), nasty);
    }
}
