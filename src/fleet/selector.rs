//! Host selectors: `web-1`, `web-*`, `@tag`, `@db-*`, unions with `,` and exclusions with `!`.

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    source: String,
}
