//! Secrets: key specs validated before any host is touched, contents read locally and sent only
//! over the ssh channel's stdin, staged with final permissions, then swapped in together.

mod remote;
mod spec;

pub use remote::{fix_owners, upload, HostKeys, Uploaded};
pub use spec::{check_hosts, KeySpec, Secret, Source, UploadAt};
