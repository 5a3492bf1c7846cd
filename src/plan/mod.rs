//! Planning: what a deploy would change, as a diff between the closure a host runs and the new one.

pub mod closure;
mod diff;
pub mod reboot;
mod render;
pub mod store_path;

pub use closure::{invalid_paths_command, parse_path_info_json, paths_on_stdin};
pub use diff::{ClosureDiff, Package, StorePathInfo, VersionChange};
pub use reboot::{BootParts, RebootReason};
pub use render::{format_size, format_size_delta};
pub use store_path::{compare_versions, StorePathName};
