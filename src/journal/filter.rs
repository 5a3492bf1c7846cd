//! Which journal records to show: host names, globs, `,` unions and `!` exclusions.

use anyhow::bail;

/// A host filter parsed from `--on`: `web-1`, `web-*`, `web-*,db-1`, `web-*,!web-3`.
///
/// The journal knows host names only, so `@tag` selectors (which need the inventory)
/// are rejected rather than guessed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl HostFilter {
    /// Parses a selector. A selector of only exclusions matches every other host.
    pub fn parse(selector: &str) -> anyhow::Result<HostFilter> {
        let mut filter = HostFilter {
            include: Vec::new(),
            exclude: Vec::new(),
        };
        for part in selector.split(',').map(str::trim) {
            let (list, pattern) = match part.strip_prefix('!') {
                Some(rest) => (&mut filter.exclude, rest.trim()),
                None => (&mut filter.include, part),
            };
            if pattern.is_empty() {
                bail!("selector `{selector}` has an empty part");
            }
            if pattern.starts_with('@') {
                bail!(
                    "selector `{selector}` uses the tag `{pattern}`, but the journal only knows \
                     host names; select by name or glob (`web-*`)"
                );
            }
            list.push(pattern.to_string());
        }
        Ok(filter)
    }

    /// Whether a host name is selected.
    pub fn matches(&self, host: &str) -> bool {
        let hit = |patterns: &[String]| patterns.iter().any(|p| glob_match::glob_match(p, host));
        (self.include.is_empty() || hit(&self.include)) && !hit(&self.exclude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_globs_unions_and_exclusions_select_hosts() {
        let filter = HostFilter::parse("web-*, db-1, !web-3").unwrap();
        assert!(filter.matches("web-1"));
        assert!(filter.matches("db-1"));
        assert!(!filter.matches("web-3"));
        assert!(!filter.matches("db-2"));
    }

    #[test]
    fn only_exclusions_select_everything_else() {
        let filter = HostFilter::parse("!web-*").unwrap();
        assert!(filter.matches("db-1"));
        assert!(!filter.matches("web-1"));
    }

    #[test]
    fn tags_and_empty_parts_are_rejected_with_the_selector_named() {
        let err = HostFilter::parse("@db").unwrap_err().to_string();
        assert!(err.contains("`@db`") && err.contains("host names"), "{err}");
        assert!(HostFilter::parse("web-1,,db-1").is_err());
        assert!(HostFilter::parse("!").is_err());
    }
}
