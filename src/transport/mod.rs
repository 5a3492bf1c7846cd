//! How a host is reached: shell quoting, ssh targets, and one multiplexed connection per host.

pub mod capture;
mod escalate;
mod local;
mod pool;
mod privilege;
mod quote;
mod ssh;
mod tuning;

pub use escalate::{Escalation, Feed, Secret, SecretBuf, Tool, DEFAULT_ESCALATION};
pub use local::{Held, HeldIn, HeldOut};
pub use pool::{disconnect_all, Pool, PoolOptions, MAX_HANDSHAKES, MAX_HANDSHAKES_IN_ALL};
pub use privilege::Access;
#[cfg(test)]
pub use quote::assert_valid_shell;
pub use quote::{command_line, quote};
pub use ssh::{nix_ssh_env, Connection, Output, Stream, Target};
pub use tuning::Tuning;
