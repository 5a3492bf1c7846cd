//! Host selectors: `web-1`, `web-*`, `@tag`, `@db-*`, unions with `,` and exclusions with `!`.

use std::fmt;
use std::sync::Arc;

use super::name::is_name_char;
use super::{suggest, Host, Inventory};
use crate::exit::Failure;

/// A parsed selector: a union of items, minus the excluded ones (see `docs/selectors.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    source: String,
    items: Vec<Item>,
}

/// One comma-separated item.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    /// Written with a leading `!`.
    exclude: bool,
    /// What the item matches.
    target: Target,
    /// The item as written, without surrounding whitespace (for messages).
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A plain host name; it must exist.
    Name(String),
    /// A glob over host names; it must match at least one host.
    Glob(String),
    /// `@tag`; some host must carry it.
    Tag(String),
    /// `@glob` over tags; it must match at least one tag.
    TagGlob(String),
}

/// A malformed selector, with the 1-based character column of the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    /// The selector as the user wrote it.
    pub input: String,
    /// 1-based column (in characters) of the problem.
    pub column: usize,
    /// What is wrong, as a lowercase fragment.
    pub message: String,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid selector '{input}' at column {column}: {message}\n  {input}\n  {pad}^",
            input = self.input,
            column = self.column,
            message = self.message,
            pad = " ".repeat(self.column.saturating_sub(1)),
        )
    }
}

impl std::error::Error for SelectorError {}

impl Selector {
    /// Parses a selector; checks only its syntax (names are checked by [`Selector::select`]).
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        let chars: Vec<char> = input.chars().collect();
        let fail = |column: usize, message: String| SelectorError {
            input: input.to_string(),
            column,
            message,
        };
        if chars.iter().all(|c| c.is_whitespace()) {
            return Err(fail(
                1,
                "the selector is empty; give host names, globs or @tags".to_string(),
            ));
        }
        let mut items = Vec::new();
        let mut start = 0;
        for end in (0..=chars.len()).filter(|&i| i == chars.len() || chars[i] == ',') {
            items.push(parse_item(&chars, start, end).map_err(|(at, msg)| fail(at + 1, msg))?);
            start = end + 1;
        }
        Ok(Selector {
            source: input.to_string(),
            items,
        })
    }

    /// The selector as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the host is selected: it matches some included item (or there are only
    /// exclusions) and no excluded item.
    pub fn matches(&self, host: &Host) -> bool {
        let mut includes = self.items.iter().filter(|i| !i.exclude).peekable();
        let included = includes.peek().is_none() || includes.any(|i| i.target.matches(host));
        included
            && !self
                .items
                .iter()
                .any(|i| i.exclude && i.target.matches(host))
    }

    /// The selected hosts in inventory order. A name that is not in the inventory, a glob or
    /// tag that matches nothing, or an empty result is an input error that lists what exists.
    pub fn select(&self, inv: &Inventory) -> anyhow::Result<Vec<Arc<Host>>> {
        for item in &self.items {
            item.check_against(&self.source, inv)?;
        }
        let hosts: Vec<Arc<Host>> = inv
            .hosts
            .values()
            .filter(|h| self.matches(h))
            .cloned()
            .collect();
        if hosts.is_empty() {
            return Err(Failure::input(format!(
                "selector '{source}' selects no host (everything it matches is excluded); known hosts: {known}",
                source = self.source,
                known = suggest::list(inv.hosts.keys().map(|n| n.as_str())),
            ))
            .into());
        }
        Ok(hosts)
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Parses `chars[start..end]` as one item; errors carry a 0-based column.
fn parse_item(chars: &[char], start: usize, end: usize) -> Result<Item, (usize, String)> {
    let mut lo = start;
    let mut hi = end;
    while lo < hi && chars[lo].is_whitespace() {
        lo += 1;
    }
    while hi > lo && chars[hi - 1].is_whitespace() {
        hi -= 1;
    }
    if lo == hi {
        let message = if end == chars.len() {
            "empty item after the last ','; remove the trailing ','"
        } else {
            "empty item before ','; remove the extra ','"
        };
        return Err((lo.min(end), message.to_string()));
    }
    let text: String = chars[lo..hi].iter().collect();
    let mut at = lo;
    let exclude = chars[at] == '!';
    if exclude {
        at += 1;
        if at == hi {
            return Err((
                lo,
                "'!' must be followed by a host name, glob or @tag".to_string(),
            ));
        }
        if chars[at] == '!' {
            return Err((
                at,
                "'!!' is not allowed; exclude with a single '!'".to_string(),
            ));
        }
    }
    let tag = chars[at] == '@';
    if tag {
        at += 1;
        if at == hi {
            return Err((
                at - 1,
                "'@' must be followed by a tag name or glob".to_string(),
            ));
        }
    }
    let is_glob = check_pattern(chars, at, hi)?;
    let pattern: String = chars[at..hi].iter().collect();
    if !tag && !is_glob && !chars[at].is_ascii_alphanumeric() {
        return Err((at, "host names start with a letter or digit".to_string()));
    }
    let target = match (tag, is_glob) {
        (false, false) => Target::Name(pattern),
        (false, true) => Target::Glob(pattern),
        (true, false) => Target::Tag(pattern),
        (true, true) => Target::TagGlob(pattern),
    };
    Ok(Item {
        exclude,
        target,
        text,
    })
}

/// Checks a name or glob (`*`, `?`, `[abc]`, `[!a-c]`); returns whether it is a glob.
fn check_pattern(chars: &[char], start: usize, end: usize) -> Result<bool, (usize, String)> {
    let mut is_glob = false;
    let mut i = start;
    while i < end {
        match chars[i] {
            '*' | '?' => is_glob = true,
            '[' => {
                is_glob = true;
                i = check_class(chars, i, end)?;
            }
            ']' => return Err((i, "']' without a matching '['".to_string())),
            c if is_name_char(c) => {}
            c => return Err((i, invalid_char(c))),
        }
        i += 1;
    }
    Ok(is_glob)
}

/// Checks the class that opens at `open`; returns the index of its `]`.
fn check_class(chars: &[char], open: usize, end: usize) -> Result<usize, (usize, String)> {
    let mut i = open + 1;
    if i < end && matches!(chars[i], '!' | '^') {
        i += 1;
    }
    let first = i;
    while i < end {
        match chars[i] {
            ']' if i == first => {
                return Err((open, "empty character class '[]'".to_string()));
            }
            ']' => return Ok(i),
            c if is_name_char(c) => {}
            c => return Err((i, invalid_char(c))),
        }
        i += 1;
    }
    Err((open, "'[' is never closed; add ']'".to_string()))
}

fn invalid_char(c: char) -> String {
    match c {
        c if c.is_whitespace() => "whitespace inside an item; separate items with ','".to_string(),
        '!' => "'!' may only start an item".to_string(),
        '@' => "'@' may only start an item (or follow '!')".to_string(),
        c => format!(
            "invalid character {c:?}; use host names, globs (*, ?, [..]), @tags, ',' and '!'"
        ),
    }
}

impl Target {
    fn matches(&self, host: &Host) -> bool {
        match self {
            Target::Name(name) => host.name.as_str() == name,
            Target::Glob(glob) => glob_match::glob_match(glob, host.name.as_str()),
            Target::Tag(tag) => host.tags.iter().any(|t| t == tag),
            Target::TagGlob(glob) => host.tags.iter().any(|t| glob_match::glob_match(glob, t)),
        }
    }
}

impl Item {
    /// Rejects items that refer to nothing in the inventory.
    fn check_against(&self, source: &str, inv: &Inventory) -> anyhow::Result<()> {
        let names = || inv.hosts.keys().map(|n| n.as_str());
        let problem = match &self.target {
            Target::Name(name) if !inv.hosts.keys().any(|n| n.as_str() == name) => {
                suggest::unknown("host", name, names())
            }
            Target::Tag(tag) if !inv.hosts.values().any(|h| h.tags.contains(tag)) => {
                suggest::unknown("tag", tag, inv.tags().iter().map(String::as_str))
            }
            Target::Glob(_) if !inv.hosts.values().any(|h| self.target.matches(h)) => format!(
                "'{text}' matches no host; known hosts: {known}",
                text = self.text,
                known = suggest::list(names()),
            ),
            Target::TagGlob(_) if !inv.hosts.values().any(|h| self.target.matches(h)) => format!(
                "'{text}' matches no tag; known tags: {known}",
                text = self.text,
                known = suggest::list(inv.tags().iter().map(String::as_str)),
            ),
            _ => return Ok(()),
        };
        Err(Failure::input(format!("selector '{source}': {problem}")).into())
    }
}

#[cfg(test)]
#[path = "selector_tests.rs"]
mod tests;
