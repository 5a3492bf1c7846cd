//! `nixdeploy log`: the deployment journal as a table or JSON lines, for all hosts or one.

use std::io::{self, Write};

use crate::exit::{Exit, Failure};
use crate::journal::{HostFilter, Journal, Record};
use crate::plan::StorePathName;

/// Shows the journal, oldest first: every record, those of `host`, or those `on` selects
/// (names and globs only). Finding no records is not an error: it says so and exits 0.
pub fn run(host: Option<&str>, on: Option<&str>, json: bool) -> anyhow::Result<Exit> {
    let filter = on
        .map(HostFilter::parse)
        .transpose()
        .map_err(|err| Failure::input(format!("invalid `--on`: {err:#}")))?;
    let journal = Journal::default_location();
    let mut records = journal.read()?;
    if let Some(host) = host {
        records.retain(|r| r.host.as_str() == host);
    }
    if let Some(filter) = &filter {
        records.retain(|r| filter.matches(r.host.as_str()));
    }
    if records.is_empty() {
        let message = match (host, on) {
            (Some(host), _) => format!(
                "no records for host `{host}` in {}",
                journal.path().display()
            ),
            (None, Some(on)) => format!("no records match `--on {on}`"),
            (None, None) => format!(
                "no deployments recorded yet (journal: {})",
                journal.path().display()
            ),
        };
        // Keep stdout valid (empty) JSON lines when asked for JSON.
        if json {
            eprintln!("{message}");
        } else {
            println!("{message}");
        }
        return Ok(Exit::Success);
    }
    let output = if json {
        json_lines(&records)?
    } else {
        table(&records)
    };
    match io::stdout().lock().write_all(output.as_bytes()) {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(Exit::Success),
        other => other.map(|()| Exit::Success).map_err(Into::into),
    }
}

/// One JSON object per line, as stored.
fn json_lines(records: &[Record]) -> anyhow::Result<String> {
    let mut out = String::new();
    for record in records {
        out.push_str(&serde_json::to_string(record)?);
        out.push('\n');
    }
    Ok(out)
}

/// An aligned table with a header row.
fn table(records: &[Record]) -> String {
    let header = [
        "TIME", "HOST", "STATE", "CHANGE", "GEN", "RUNBOOK", "DURATION",
    ]
    .map(String::from);
    let rows: Vec<[String; 7]> = records
        .iter()
        .map(|r| {
            [
                r.time.clone(),
                r.host.to_string(),
                r.state.to_string(),
                change(r.path_before.as_deref(), r.path_after.as_deref()),
                r.generation.map_or("-".to_string(), |g| g.to_string()),
                r.runbook.clone(),
                duration(r.duration_ms),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `before → after` with store names shortened; when both have the same name the short
/// hashes tell them apart (`nixos-system-web-1-23.11 (abc1234 → def5678)`).
fn change(before: Option<&str>, after: Option<&str>) -> String {
    let (b, a) = (
        before.map(StorePathName::parse),
        after.map(StorePathName::parse),
    );
    match (&b, &a) {
        (None, None) => "-".to_string(),
        (None, Some(a)) => format!("→ {}", a.short()),
        (Some(b), None) => format!("{} →", b.short()),
        _ if before == after => b.map(|b| b.short()).unwrap_or_default(),
        (Some(b), Some(a)) if b.short() == a.short() => {
            let hash = |n: &StorePathName| {
                n.hash
                    .as_deref()
                    .map_or("?".to_string(), |h| h[..7].to_string())
            };
            format!("{} ({} → {})", b.short(), hash(b), hash(a))
        }
        (Some(b), Some(a)) => format!("{} → {}", b.short(), a.short()),
    }
}

/// `850ms`, `12.3s`, `3m04s`.
fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/2raac275ma78k0yqv8kcydpsdj8cqn6h-nixos-system-web-1-23.11";
    const B: &str = "/nix/store/d0x4sjwksanirbaxlb05009gy5lvia3q-nixos-system-web-1-23.11";
    const C: &str = "/nix/store/d1rcs297wfrf5bfh6zkljlz4f2cp6p00-nixos-system-web-1-24.05";

    #[test]
    fn changes_show_short_names_and_hashes_only_when_names_match() {
        assert_eq!(
            change(Some(A), Some(C)),
            "nixos-system-web-1-23.11 → nixos-system-web-1-24.05"
        );
        assert_eq!(
            change(Some(A), Some(B)),
            "nixos-system-web-1-23.11 (2raac27 → d0x4sjw)"
        );
        assert_eq!(change(Some(A), Some(A)), "nixos-system-web-1-23.11");
        assert_eq!(change(None, Some(C)), "→ nixos-system-web-1-24.05");
        assert_eq!(change(None, None), "-");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(184_000), "3m04s");
    }
}
