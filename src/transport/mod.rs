//! How a host is reached: shell quoting, ssh targets, and one multiplexed connection per host.

pub mod capture;
mod escalate;
mod local;
mod pool;
mod quote;
mod ssh;
mod tuning;

pub use escalate::{Escalation, DEFAULT_ESCALATION};
pub use local::{Held, HeldIn, HeldOut};
pub use pool::{disconnect_all, Pool, PoolOptions, MAX_HANDSHAKES};
#[cfg(test)]
pub use quote::assert_valid_shell;
pub use quote::{command_line, quote};
pub use ssh::{nix_ssh_env, Connection, Output, Stream, Target};
pub use tuning::Tuning;
