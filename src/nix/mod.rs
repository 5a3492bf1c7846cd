//! Nix on the deploying machine: argv builders (pure, unit-tested) and the runs of `nix build` and `nix copy`.

mod argv;
mod process;
pub mod setup;

pub use argv::{closure_argv, Nix, StoreUri};
pub use process::{run_local, LocalOutput};
