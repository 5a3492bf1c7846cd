//! The client side of a sandbox: the ssh config and the known_hosts file `up` writes.

use std::fmt::Write;
use std::path::Path;

/// One ssh destination as the client sees it.
#[derive(Debug, Clone)]
pub struct Endpoint<'a> {
    /// The alias (`h1`).
    pub name: &'a str,
    /// Its address.
    pub address: &'a str,
    /// Its public host key line (`ssh-ed25519 AAAA… comment`).
    pub host_key: &'a str,
}

/// Quotes a path for ssh_config (double quotes; ssh_config has no escapes, so refuse `"`).
fn quote(path: &Path) -> anyhow::Result<String> {
    let text = path.to_str().unwrap_or_default();
    anyhow::ensure!(
        !text.is_empty() && !text.contains('"') && !text.contains('\n'),
        "sandbox path {} cannot be written into an ssh config",
        path.display()
    );
    Ok(format!("\"{text}\""))
}

/// An ssh config with a `Host` alias per endpoint.
pub fn ssh_config(
    hosts: &[Endpoint<'_>],
    identity: &Path,
    known_hosts: &Path,
) -> anyhow::Result<String> {
    let identity = quote(identity)?;
    let known_hosts = quote(known_hosts)?;
    let mut text = String::from("# Written by `nixdeploy sandbox up`; use with `ssh -F`.\n");
    for host in hosts {
        let _ = write!(
            text,
            "\nHost {name}\n  HostName {address}\n  User root\n  Port 22\n  \
             IdentityFile {identity}\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n  \
             StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 5\n  \
             ServerAliveInterval 1\n  ServerAliveCountMax 3\n",
            name = host.name,
            address = host.address,
        );
    }
    Ok(text)
}

/// A known_hosts file naming each host by alias and address with its real host key.
pub fn known_hosts(hosts: &[Endpoint<'_>]) -> String {
    let mut text = String::new();
    for host in hosts {
        let key: Vec<&str> = host.host_key.split_whitespace().take(2).collect();
        let _ = writeln!(text, "{},{} {}", host.name, host.address, key.join(" "));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_lists_alias_and_address() {
        let hosts = [Endpoint {
            name: "h1",
            address: "10.77.1.11",
            host_key: "ssh-ed25519 AAAAkey root@h1\n",
        }];
        assert_eq!(known_hosts(&hosts), "h1,10.77.1.11 ssh-ed25519 AAAAkey\n");
    }

    #[test]
    fn ssh_config_has_one_alias_per_host() {
        let hosts = [Endpoint {
            name: "h1",
            address: "10.77.1.11",
            host_key: "",
        }];
        let text = ssh_config(&hosts, Path::new("/d/id"), Path::new("/d/kh")).unwrap();
        assert!(text.contains("Host h1\n  HostName 10.77.1.11\n  User root\n"));
        assert!(text.contains("IdentityFile \"/d/id\""));
        assert!(text.contains("StrictHostKeyChecking yes"));
    }
}
