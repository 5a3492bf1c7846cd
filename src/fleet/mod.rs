//! The fleet: host names, the inventory read from a flake, and host selectors.

pub mod cache;
mod deploy_rs;
pub mod eval;
pub mod inventory;
mod name;
mod schema;
pub mod selector;
mod suggest;
#[cfg(test)]
mod testing;
mod value;

pub use cache::BinaryCache;
pub use inventory::{BuildOn, Builder, Host, Inventory};
pub use name::HostName;
pub use schema::SYSTEM_PROFILE;
pub use selector::{Selector, SelectorError};
