//! The runbook engine — the only module that knows Rhai: engine setup, the API surface
//! (`api/`), module resolution, and errors rendered with their source positions.

pub mod api;
pub mod docs;
mod errors;
mod modules;
pub mod params;
pub mod preflight;
mod session;
pub mod stdlib;

pub use errors::{render_parse_error, RunbookError};
pub use modules::{LibraryPath, Resolver};
pub use session::{display, Session};
