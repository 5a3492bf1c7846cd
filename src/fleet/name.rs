//! `HostName`: the inventory name of a host, kept apart from addresses and other strings.

use std::fmt;

/// The name of a host in the inventory (`web-1`), not its address.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct HostName(String);

impl HostName {
    /// Wraps a name; validation happens where names enter (the inventory).
    pub fn new(name: impl Into<String>) -> Self {
        HostName(name.into())
    }

    /// A validated name: `[A-Za-z0-9][A-Za-z0-9._-]*`; the error says what is wrong with it.
    pub fn parse(name: &str) -> Result<Self, String> {
        check_name(name)?;
        Ok(HostName(name.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `c` may appear in a host, builder or tag name.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks a host or builder name: it starts with a letter or digit and holds only letters,
/// digits, `.`, `_` and `-` (so selectors, `user@host` and ssh never misread it).
pub fn check_name(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("the name is empty".to_string());
    };
    if !first.is_ascii_alphanumeric() {
        return Err(format!("'{name}' must start with a letter or digit"));
    }
    check_chars(name)
}

/// Checks a tag: one or more letters, digits, `.`, `_` or `-`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("a tag is empty".to_string());
    }
    check_chars(tag)
}

fn check_chars(name: &str) -> Result<(), String> {
    match name.chars().find(|c| !is_name_char(*c)) {
        Some(bad) => Err(format!(
            "'{name}' contains {bad:?}; use only letters, digits, '.', '_' and '-'"
        )),
        None => Ok(()),
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for HostName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_valid() {
        for name in ["web-1", "db.eu_west", "9lives", "A"] {
            assert!(HostName::parse(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn names_that_selectors_or_ssh_would_misread_are_rejected() {
        for name in [
            "", "-web", ".web", "root@web", "a,b", "!web", "web*", "web 1", "wéb",
        ] {
            assert!(HostName::parse(name).is_err(), "{name}");
        }
    }

    #[test]
    fn tags_may_start_with_any_name_character() {
        assert!(check_tag("_internal").is_ok());
        assert!(check_tag("").is_err());
        assert!(check_tag("a/b").is_err());
    }
}
