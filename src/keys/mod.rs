//! Secrets: key specs validated before any host is touched, contents read locally and sent only
//! over the ssh channel's stdin, staged with final permissions, then swapped in together.

mod remote;
mod spec;

pub use remote::{fix_owners, upload, HostKeys, Uploaded};
pub use spec::{check_hosts, KeySpec, Secret, Source, UploadAt};

use std::sync::Arc;

use crate::fleet::Host;

/// The inventory keys of each host that go up at `when`, read and ready to upload. Every key
/// of every host is validated first, whatever its moment, so one bad spec stops the caller
/// before any host is touched. Hosts without keys for `when` are left out. Errors name the host.
pub fn inventory_keys(
    hosts: &[Arc<Host>],
    when: UploadAt,
) -> Result<Vec<(Arc<Host>, HostKeys)>, String> {
    let mut specs = Vec::new();
    for h in hosts {
        let mut mine = Vec::new();
        for (name, value) in &h.keys {
            let spec = KeySpec::parse(value, Some(name))
                .and_then(|spec| spec.check_source().map(|_| spec))
                .map_err(|e| format!("host {}: {e}", h.name))?;
            if spec.upload_at == when {
                mine.push(spec);
            }
        }
        specs.push((h.clone(), mine));
    }
    let mut items = Vec::new();
    for (h, mine) in specs {
        if mine.is_empty() {
            continue;
        }
        let mut loaded = Vec::new();
        for spec in mine {
            let secret = spec.read().map_err(|e| format!("host {}: {e}", h.name))?;
            loaded.push((spec, secret));
        }
        items.push((h, Arc::new(loaded)));
    }
    Ok(items)
}
