//! The Rhai standard library (`stdlib/*.rhai`), embedded in the binary and importable by name.

/// `(name, source)` of every embedded module: `import "rollout" as rollout;`.
pub const MODULES: &[(&str, &str)] = &[
    ("builders", include_str!("../../stdlib/builders.rhai")),
    ("canary", include_str!("../../stdlib/canary.rhai")),
    ("checks", include_str!("../../stdlib/checks.rhai")),
    ("rollout", include_str!("../../stdlib/rollout.rhai")),
];

/// The embedded source of a stdlib module.
pub fn source(name: &str) -> Option<&'static str> {
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
