//! The runbooks shipped inside the binary (`runbooks/*.rhai`), and how a `RUNBOOK` argument
//! picks between a file on disk and a shipped runbook: an existing file always wins.

use std::path::Path;

use crate::exit::Failure;

/// `(name, source)` of every shipped runbook: `nixdeploy run canary`.
pub const RUNBOOKS: &[(&str, &str)] = &[
    ("apply", include_str!("../../runbooks/apply.rhai")),
    ("build", include_str!("../../runbooks/build.rhai")),
    ("canary", include_str!("../../runbooks/canary.rhai")),
    ("exec", include_str!("../../runbooks/exec.rhai")),
    ("rolling", include_str!("../../runbooks/rolling.rhai")),
];

/// Where a runbook's text came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file on disk, as named on the command line.
    File,
    /// A runbook shipped in the binary, chosen because no file of that name exists.
    Shipped,
}

/// A runbook ready to compile: the name errors point at, its text, and where it came from.
#[derive(Debug, Clone)]
pub struct Runbook {
    /// The name errors and the journal use: the path as typed, or `shipped/NAME.rhai`.
    pub source: String,
    /// Its text.
    pub text: String,
    /// File or shipped.
    pub origin: Origin,
}

impl Runbook {
    /// Tells `resolver` that a shipped runbook's imports are not looked up next to it on disk.
    pub fn mark(&self, resolver: &crate::engine::Resolver) {
        if self.origin == Origin::Shipped {
            resolver.mark_embedded(&self.source);
        }
    }

    /// One line saying which runbook this is, for `check` and `run`.
    pub fn describe(&self) -> String {
        match self.origin {
            Origin::File => format!("{} (file)", self.source),
            Origin::Shipped => format!("{} (shipped with nixdeploy)", self.source),
        }
    }
}

/// The names of the shipped runbooks.
pub fn names() -> Vec<&'static str> {
    RUNBOOKS.iter().map(|(n, _)| *n).collect()
}

/// The shipped runbook called `name` (`canary` or `canary.rhai`).
pub fn shipped(name: &str) -> Option<Runbook> {
    let bare = name.strip_suffix(".rhai").unwrap_or(name);
    RUNBOOKS
        .iter()
        .find(|(n, _)| *n == bare)
        .map(|(n, text)| Runbook {
            source: format!("shipped/{n}.rhai"),
            text: text.to_string(),
            origin: Origin::Shipped,
        })
}

/// The first paragraph of a runbook's header comment, after its name: what it does.
pub fn summary(text: &str) -> String {
    let words: Vec<&str> = text
        .lines()
        .map(|l| l.trim())
        .take_while(|l| l.starts_with("//") && !l.starts_with("//!") && *l != "//")
        .map(|l| l.trim_start_matches('/').trim())
        .collect();
    let para = words.join(" ");
    match para.split_once(" — ") {
        Some((_, what)) => what.to_string(),
        None => para,
    }
}

/// Reads `arg`: the file when it exists, else the shipped runbook of that name (a bare name,
/// no `/`), else an error naming both places and the shipped runbooks.
pub fn load(arg: &Path) -> Result<Runbook, Failure> {
    let source = arg.display().to_string();
    match std::fs::read_to_string(arg) {
        Ok(text) => {
            return Ok(Runbook {
                source,
                text,
                origin: Origin::File,
            })
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Failure::input(format!("cannot read runbook {source}: {e}")))
        }
        Err(_) => {}
    }
    let bare_name = arg.components().count() == 1;
    if let Some(found) = bare_name.then(|| shipped(&source)).flatten() {
        return Ok(found);
    }
    let names: Vec<&str> = RUNBOOKS.iter().map(|(n, _)| *n).collect();
    let near = names
        .iter()
        .map(|n| (strsim::osa_distance(&source, n), n))
        .filter(|(d, _)| *d <= 2)
        .min();
    let hint = match near {
        Some((_, near)) if bare_name => format!(" (did you mean `{near}`?)"),
        _ => String::new(),
    };
    Err(Failure::input(format!(
        "cannot read runbook {source}: no such file, and no shipped runbook of that name{hint}; \
         shipped runbooks: {} (`nixdeploy runbooks` lists them)",
        names.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_without_a_file_is_the_shipped_runbook() {
        // The tests run in the crate root, which has runbooks/ but no file named `canary`.
        let r = load(Path::new("canary")).unwrap();
        assert_eq!(r.origin, Origin::Shipped);
        assert_eq!(r.source, "shipped/canary.rhai");
        assert!(r.text.contains("import \"canary\""));
    }

    #[test]
    fn an_existing_file_wins_over_the_shipped_runbook() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apply.rhai");
        std::fs::write(&path, "print(1);").unwrap();
        let r = load(&path).unwrap();
        assert_eq!(r.origin, Origin::File);
        assert_eq!(r.text, "print(1);");
    }

    #[test]
    fn a_missing_path_is_not_taken_for_a_shipped_name() {
        let err = load(Path::new("nowhere/apply.rhai")).unwrap_err();
        assert!(err.message.contains("no such file"), "{}", err.message);
        let err = load(Path::new("canar")).unwrap_err();
        assert!(
            err.message.contains("did you mean `canary`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn every_shipped_runbook_says_what_it_does() {
        for (name, text) in RUNBOOKS {
            let s = summary(text);
            assert!(!s.is_empty() && !s.contains(".rhai"), "{name}: {s}");
        }
    }
}
