//! `nixdeploy hosts`: lists the selected hosts as a table or as JSON, from the metadata pass
//! alone (no toplevel is evaluated, so drv and out paths are null).

use std::sync::Arc;

use crate::exit::Exit;
use crate::fleet::{BuildOn, Host, Inventory};

/// Lists the selected hosts.
pub fn run(flake: &str, on: Option<&str>, json: bool) -> anyhow::Result<Exit> {
    let inventory = Inventory::load(flake)?;
    for warning in &inventory.warnings {
        eprintln!("warning: {warning}");
    }
    let hosts = inventory.select(on)?;
    let text = if json {
        let rows: Vec<Row> = hosts.iter().map(|h| Row::from(h.as_ref())).collect();
        serde_json::to_string_pretty(&rows)?
    } else {
        table(&hosts)
    };
    println!("{text}");
    Ok(Exit::Success)
}

/// One host in `--json` output.
#[derive(Debug, serde::Serialize)]
struct Row<'a> {
    name: &'a str,
    target_host: &'a str,
    target_user: Option<&'a str>,
    target_port: Option<u16>,
    tags: &'a [String],
    system: &'a str,
    build_on: String,
    /// `null` unless the toplevel was evaluated (`hosts` never evaluates one).
    drv_path: Option<&'a str>,
    /// `null` unless the toplevel was evaluated.
    out_path: Option<&'a str>,
    /// Whether the host has a system profile.
    has_system: bool,
    /// The other profiles, in deploy order (their paths `null` unless evaluated).
    profiles: Vec<serde_json::Value>,
    /// Deployed without ssh.
    local: bool,
    /// `activate` defaults from the inventory.
    activate_defaults: &'a crate::fleet::ActivateDefaults,
    /// The argv that runs commands as root; empty when the login is root.
    privilege_escalation: &'a [String],
    /// `signingKey`, when set.
    signing_key: Option<String>,
}

impl<'a> From<&'a Host> for Row<'a> {
    fn from(host: &'a Host) -> Self {
        let evaluated = host.evaluation == crate::fleet::Evaluation::Done;
        let profiles = host
            .profiles
            .iter()
            .map(|p| {
                let mut v = serde_json::to_value(p).unwrap_or_default();
                if !evaluated {
                    v["drv_path"] = serde_json::Value::Null;
                    v["out_path"] = serde_json::Value::Null;
                }
                v
            })
            .collect();
        Row {
            name: host.name.as_str(),
            target_host: &host.target_host,
            target_user: host.target_user.as_deref(),
            target_port: host.target_port,
            tags: &host.tags,
            system: &host.system,
            build_on: match &host.build_on {
                BuildOn::Builder(name) => name.clone(),
                other => build_location(other),
            },
            drv_path: evaluated.then_some(host.drv_path.as_str()),
            out_path: evaluated.then_some(host.out_path.as_str()),
            has_system: host.has_system,
            profiles,
            local: host.local,
            activate_defaults: &host.activate_defaults,
            privilege_escalation: &host.escalation.argv,
            signing_key: host.signing_key.as_ref().map(|k| k.display().to_string()),
        }
    }
}

/// `local`, `target` or `builder:<name>`.
fn build_location(build_on: &BuildOn) -> String {
    match build_on {
        BuildOn::Local => "local".to_string(),
        BuildOn::Target => "target".to_string(),
        BuildOn::Builder(name) => format!("builder:{name}"),
    }
}

/// `user@host:port`, with brackets around IPv6 addresses that carry a port.
fn target(host: &Host) -> String {
    if host.local {
        return "local (no ssh)".to_string();
    }
    let mut text = String::new();
    if let Some(user) = &host.target_user {
        text.push_str(user);
        text.push('@');
    }
    match host.target_port {
        Some(port) if host.target_host.contains(':') => {
            text.push_str(&format!("[{}]:{port}", host.target_host))
        }
        Some(port) => text.push_str(&format!("{}:{port}", host.target_host)),
        None => text.push_str(&host.target_host),
    }
    text
}

/// Aligned columns: NAME, TARGET, TAGS, SYSTEM, BUILD.
fn table(hosts: &[Arc<Host>]) -> String {
    let mut rows = vec![["NAME", "TARGET", "TAGS", "SYSTEM", "BUILD"].map(str::to_string)];
    for host in hosts {
        let tags = if host.tags.is_empty() {
            "-".to_string()
        } else {
            host.tags.join(",")
        };
        rows.push([
            host.name.to_string(),
            target(host),
            tags,
            host.system.clone(),
            build_location(&host.build_on),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|col| rows.iter().map(|r| r[col].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::HostName;
    use std::collections::BTreeMap;

    fn host(user: Option<&str>, addr: &str, port: Option<u16>) -> Host {
        Host {
            name: HostName::new("web-1"),
            target_host: addr.to_string(),
            target_user: user.map(str::to_string),
            escalation: Default::default(),
            signing_key: None,
            target_port: port,
            tags: vec!["web".to_string()],
            system: "x86_64-linux".to_string(),
            drv_path: "/nix/store/a.drv".to_string(),
            out_path: "/nix/store/a".to_string(),
            profile: "/nix/var/nix/profiles/system".to_string(),
            build_on: BuildOn::Builder("arm".to_string()),
            ssh_options: vec![],
            keys: BTreeMap::new(),
            cache: None,
            has_system: true,
            evaluation: Default::default(),
            profiles: vec![],
            system_position: 0,
            activate_defaults: Default::default(),
            substitute: None,
            local: false,
        }
    }

    #[test]
    fn targets_show_only_what_is_set() {
        assert_eq!(target(&host(None, "web-1", None)), "web-1");
        assert_eq!(target(&host(Some("root"), "h", Some(2222))), "root@h:2222");
        assert_eq!(target(&host(None, "::1", Some(22))), "[::1]:22");
    }

    #[test]
    fn json_rows_name_the_builder_and_the_table_prefixes_it() {
        let h = host(None, "web-1", None);
        assert_eq!(Row::from(&h).build_on, "arm");
        let text = table(&[Arc::new(h)]);
        assert!(
            text.lines().nth(1).unwrap().ends_with("builder:arm"),
            "{text}"
        );
    }
}
