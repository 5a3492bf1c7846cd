//! Nix on the deploying machine: argv builders (pure, unit-tested) and the runs of `nix build` and `nix copy`.

mod argv;
pub mod cache;
mod process;
pub mod setup;

pub use argv::{closure_argv, validity_argv, Nix, StoreUri};
pub use process::{run_local, LocalOutput};
