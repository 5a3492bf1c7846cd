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

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
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
