//! The fleet: host names, the inventory read from a flake, and host selectors.

pub mod inventory;
mod name;
pub mod selector;

pub use inventory::{BuildOn, Builder, Host, Inventory};
pub use name::HostName;
pub use selector::Selector;
