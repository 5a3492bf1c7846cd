//! A closure diff as text for terminals: one `-`/`+` line per package version, then a summary.

use std::fmt::Write;

use super::diff::{ClosureDiff, Package};

/// A size in bytes with a binary unit and one decimal (`12.3 MiB`; bytes below 1 KiB as `512 B`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: &[&str] = &["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The change from `before` to `after` with its sign (`+102.4 KiB`, `-1.0 MiB`, `±0 B`).
pub fn format_size_delta(before: u64, after: u64) -> String {
    match after.cmp(&before) {
        std::cmp::Ordering::Equal => "±0 B".to_string(),
        std::cmp::Ordering::Greater => format!("+{}", format_size(after - before)),
        std::cmp::Ordering::Less => format!("-{}", format_size(before - after)),
    }
}

/// One line of the listing, kept sortable by package name.
struct Line {
    name: String,
    sign: char,
    text: String,
}

fn package_line(sign: char, package: &Package) -> Line {
    let text = match &package.version {
        Some(version) => format!("{} {version}", package.name),
        None => package.name.clone(),
    };
    Line {
        name: package.name.clone(),
        sign,
        text,
    }
}

impl ClosureDiff {
    /// The diff as text: `"no change"` for identical closures, otherwise the package lines
    /// (`- openssl 3.0.13` / `+ openssl 3.0.14`, sorted by name, removals first) followed by
    /// [`ClosureDiff::summary`].
    pub fn render(&self) -> String {
        if self.is_empty() {
            return "no change".to_string();
        }
        let mut lines: Vec<Line> = Vec::new();
        lines.extend(self.removed.iter().map(|p| package_line('-', p)));
        lines.extend(self.added.iter().map(|p| package_line('+', p)));
        for change in &self.changed {
            let downgrade = if change.is_downgrade() {
                " (downgrade)"
            } else {
                ""
            };
            for (sign, version, note) in [('-', &change.from, ""), ('+', &change.to, downgrade)] {
                lines.push(Line {
                    name: change.name.clone(),
                    sign,
                    text: format!("{} {version}{note}", change.name),
                });
            }
        }
        // A stable sort by name keeps each change's `-` line right above its `+` line.
        lines.sort_by(|a, b| (&a.name, a.sign == '+').cmp(&(&b.name, b.sign == '+')));
        let mut out = String::new();
        if self.first_deploy {
            out.push_str("first deploy\n");
        }
        for line in &lines {
            let _ = writeln!(out, "{} {}", line.sign, line.text);
        }
        out.push_str(&self.summary());
        out
    }

    /// The one-line summary: `closure: 12.3 MiB → 12.4 MiB (+102.4 KiB), 2 paths added,
    /// 1 removed; reboot needed: kernel changed`.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "closure: {} → {} ({}), {} {} added, {} removed",
            format_size(self.size_before),
            format_size(self.size_after),
            format_size_delta(self.size_before, self.size_after),
            self.paths_added,
            if self.paths_added == 1 {
                "path"
            } else {
                "paths"
            },
            self.paths_removed,
        );
        if !self.rebuilt.is_empty() {
            let _ = write!(out, " ({} rebuilt at the same version)", self.rebuilt.len());
        }
        if self.reboot_relevant {
            let reasons: Vec<&str> = self.reboot_reasons.iter().map(|r| r.as_str()).collect();
            let _ = write!(out, "; reboot needed: {} changed", reasons.join(", "));
        } else {
            out.push_str("; no reboot needed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::diff::StorePathInfo;
    use super::*;

    fn info(hash_char: char, base: &str, nar_size: u64) -> StorePathInfo {
        StorePathInfo {
            path: format!("/nix/store/{}-{base}", hash_char.to_string().repeat(32)),
            nar_size,
        }
    }

    #[test]
    fn sizes_use_binary_units_with_one_decimal() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1.0 KiB");
        assert_eq!(format_size(12_897_485), "12.3 MiB");
        assert_eq!(format_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(format_size_delta(100, 100), "±0 B");
        assert_eq!(format_size_delta(0, 104_858), "+102.4 KiB");
        assert_eq!(format_size_delta(2048, 1024), "-1.0 KiB");
    }

    #[test]
    fn identical_closures_render_as_no_change() {
        let c = vec![info('a', "etc", 1)];
        assert_eq!(ClosureDiff::between(&c, &c).render(), "no change");
    }

    #[test]
    fn a_change_renders_as_a_minus_and_plus_line_then_the_summary() {
        let before = vec![
            info('a', "openssl-3.0.13", 12 * 1024 * 1024),
            info('b', "curl-8.5.0", 1024),
            info('c', "linux-6.6.8", 1024),
        ];
        let after = vec![
            info('d', "openssl-3.0.14", 12 * 1024 * 1024 + 100 * 1024),
            info('f', "htop-3.3.0", 1024),
            info('g', "linux-6.6.9", 1024),
        ];
        let text = ClosureDiff::between(&before, &after).render();
        assert_eq!(
            text,
            "- curl 8.5.0\n\
             + htop 3.3.0\n\
             - linux 6.6.8\n\
             + linux 6.6.9\n\
             - openssl 3.0.13\n\
             + openssl 3.0.14\n\
             closure: 12.0 MiB → 12.1 MiB (+100.0 KiB), 3 paths added, 3 removed; \
             reboot needed: kernel changed"
        );
    }

    #[test]
    fn rebuilds_and_downgrades_are_called_out() {
        let before = vec![info('a', "etc", 10), info('b', "nginx-1.25.3", 10)];
        let after = vec![info('c', "etc", 10), info('d', "nginx-1.24.0", 10)];
        let text = ClosureDiff::between(&before, &after).render();
        assert!(text.contains("+ nginx 1.24.0 (downgrade)"), "{text}");
        assert!(text.contains("(1 rebuilt at the same version)"), "{text}");
        assert!(text.ends_with("; no reboot needed"), "{text}");
    }

    #[test]
    fn a_first_deploy_says_so() {
        let text = ClosureDiff::between(&[], &[info('a', "etc", 1)]).render();
        assert_eq!(
            text,
            "first deploy\n+ etc\nclosure: 0 B → 1 B (+1 B), 1 path added, 0 removed; no reboot needed"
        );
    }
}
