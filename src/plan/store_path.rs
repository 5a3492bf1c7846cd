//! Store path names split into package name, version and output, the way Nix splits them.

use std::cmp::Ordering;

/// Output names that Nix appends after the version (`openssl-3.0.13-dev`).
///
/// `modules-shrunk` is not an output but the NixOS name of the trimmed kernel module tree
/// (`linux-6.6.8-modules-shrunk`); treating it as one keeps it apart from the kernel itself.
const OUTPUTS: &[&str] = &[
    "modules-shrunk",
    "bin",
    "debug",
    "dev",
    "devdoc",
    "doc",
    "info",
    "lib",
    "man",
    "modules",
    "out",
    "py",
    "static",
    "terminfo",
];

/// The characters of Nix's base-32 alphabet, used in store path hashes.
const NIX_BASE32: &str = "0123456789abcdfghijklmnpqrsvwxyz";

/// The length of the hash at the start of a store path's base name.
const HASH_LEN: usize = 32;

/// A store path name taken apart: `/nix/store/<hash>-openssl-3.0.13-dev` is
/// name `openssl`, version `3.0.13`, output `dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePathName {
    /// The store hash, when the path had one.
    pub hash: Option<String>,
    /// The package name (`openssl`, `nixos-system-web`, `etc`).
    pub name: String,
    /// The version, when the name has one (`3.0.13`).
    pub version: Option<String>,
    /// The output suffix after the version (`dev`, `man`, `bin`, ...), if any.
    pub output: Option<String>,
    /// Whether the path is a derivation (`.drv`).
    pub is_drv: bool,
}

impl StorePathName {
    /// Parses a store path (`/nix/store/<hash>-name-version`) or a bare base name.
    ///
    /// Only the last path component is looked at, so any store directory works.
    /// The version starts at the first `-` that is not followed by a letter, which is
    /// the rule of `builtins.parseDrvName` (in practice: a `-` followed by a digit).
    /// Hence `nixos-system-web-1-23.11` is name `nixos-system-web`, version `1-23.11`.
    /// An output suffix is only recognised after a version; `foo-dev` without a version
    /// stays name `foo-dev`.
    pub fn parse(path: &str) -> StorePathName {
        let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let (hash, rest) = split_hash(base);
        let (rest, is_drv) = match rest.strip_suffix(".drv") {
            Some(stripped) => (stripped, true),
            None => (rest, false),
        };
        let (name, version) = split_name_version(rest);
        let (version, output) = match version {
            Some(version) => {
                let (version, output) = split_output(version);
                (Some(version.to_string()), output.map(str::to_string))
            }
            None => (None, None),
        };
        StorePathName {
            hash: hash.map(str::to_string),
            name: name.to_string(),
            version,
            output,
            is_drv,
        }
    }

    /// The key packages are matched by across two closures: the name, then `^output`
    /// for outputs other than `out` (Nix's own output syntax, which never clashes with
    /// a name because `^` is not allowed in store names), then `.drv` for derivations.
    /// `openssl-3.0.13-dev` → `openssl^dev`; `hello-2.12.drv` → `hello.drv`.
    pub fn key(&self) -> String {
        let mut key = self.name.clone();
        if let Some(output) = self.output.as_deref().filter(|o| *o != "out") {
            key.push('^');
            key.push_str(output);
        }
        if self.is_drv {
            key.push_str(".drv");
        }
        key
    }

    /// The name without the store directory and hash (`openssl-3.0.13-dev`).
    pub fn short(&self) -> String {
        let mut short = self.name.clone();
        for part in [&self.version, &self.output].into_iter().flatten() {
            short.push('-');
            short.push_str(part);
        }
        if self.is_drv {
            short.push_str(".drv");
        }
        short
    }
}

/// Splits `<32 base-32 chars>-rest` into the hash and the rest; other names have no hash.
fn split_hash(base: &str) -> (Option<&str>, &str) {
    let bytes = base.as_bytes();
    let has_hash = bytes.len() > HASH_LEN
        && bytes[HASH_LEN] == b'-'
        && base[..HASH_LEN].chars().all(|c| NIX_BASE32.contains(c));
    if has_hash {
        (Some(&base[..HASH_LEN]), &base[HASH_LEN + 1..])
    } else {
        (None, base)
    }
}

/// `builtins.parseDrvName`: the version begins after the first `-` not followed by a letter.
fn split_name_version(full: &str) -> (&str, Option<&str>) {
    let bytes = full.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'-' && i + 1 < bytes.len() && !bytes[i + 1].is_ascii_alphabetic() {
            return (&full[..i], Some(&full[i + 1..]));
        }
    }
    (full, None)
}

/// Splits a known output suffix off a version: `3.0.13-dev` → (`3.0.13`, `dev`).
fn split_output(version: &str) -> (&str, Option<&str>) {
    for output in OUTPUTS {
        if let Some(rest) = version.strip_suffix(output) {
            if let Some(rest) = rest.strip_suffix('-').filter(|r| !r.is_empty()) {
                return (rest, Some(output));
            }
        }
    }
    (version, None)
}

/// Compares two versions like `builtins.compareVersions`: components are runs of digits
/// or of other characters, split at `.` and `-`; numbers compare numerically, `pre`
/// sorts before everything, strings sort before numbers, a missing component sorts first.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut left, mut right) = (components(a), components(b));
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (l, r) => {
                let (l, r) = (l.unwrap_or(""), r.unwrap_or(""));
                if component_less(l, r) {
                    return Ordering::Less;
                }
                if component_less(r, l) {
                    return Ordering::Greater;
                }
            }
        }
    }
}

/// The components of a version string.
fn components(version: &str) -> impl Iterator<Item = &str> {
    let mut rest = version;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(['.', '-']);
        let first = rest.chars().next()?;
        let digits = first.is_ascii_digit();
        let end = rest
            .find(|c: char| c == '.' || c == '-' || c.is_ascii_digit() != digits)
            .unwrap_or(rest.len());
        let (component, tail) = rest.split_at(end);
        rest = tail;
        Some(component)
    })
}

/// Nix's ordering of single version components.
fn component_less(a: &str, b: &str) -> bool {
    let number = |s: &str| s.parse::<u128>().ok();
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x < y,
        _ if a.is_empty() && number(b).is_some() => true,
        _ if a == "pre" && b != "pre" => true,
        _ if b == "pre" => false,
        (Some(_), None) => false,
        (None, Some(_)) => true,
        (None, None) => a < b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "2raac275ma78k0yqv8kcydpsdj8cqn6h";

    fn parse(base: &str) -> StorePathName {
        StorePathName::parse(&format!("/nix/store/{HASH}-{base}"))
    }

    #[test]
    fn version_starts_at_the_first_dash_followed_by_a_digit() {
        let p = parse("openssl-3.0.13");
        assert_eq!(p.hash.as_deref(), Some(HASH));
        assert_eq!(p.name, "openssl");
        assert_eq!(p.version.as_deref(), Some("3.0.13"));
        assert_eq!(p.output, None);
        assert_eq!(p.key(), "openssl");
    }

    #[test]
    fn dashes_followed_by_letters_stay_in_the_name() {
        let p = parse("util-linux-minimal-2.39.2");
        assert_eq!(p.name, "util-linux-minimal");
        assert_eq!(p.version.as_deref(), Some("2.39.2"));
    }

    #[test]
    fn output_suffixes_after_the_version_become_part_of_the_key() {
        for output in ["dev", "man", "bin", "lib", "doc"] {
            let p = parse(&format!("openssl-3.0.13-{output}"));
            assert_eq!(p.name, "openssl");
            assert_eq!(p.version.as_deref(), Some("3.0.13"));
            assert_eq!(p.output.as_deref(), Some(output));
            assert_eq!(p.key(), format!("openssl^{output}"));
        }
    }

    #[test]
    fn the_out_output_does_not_change_the_key() {
        assert_eq!(parse("hello-2.12-out").key(), "hello");
    }

    #[test]
    fn names_without_a_version_have_no_version_and_no_output() {
        let p = parse("etc");
        assert_eq!((p.name.as_str(), p.version), ("etc", None));
        let p = parse("unit-sshd.service");
        assert_eq!((p.name.as_str(), p.version), ("unit-sshd.service", None));
        let p = parse("foo-dev");
        assert_eq!((p.name.as_str(), p.output), ("foo-dev", None));
    }

    #[test]
    fn a_digit_after_a_dash_in_a_host_name_starts_the_version() {
        let p = parse("nixos-system-web-1-23.11.20240101.abcdef0");
        assert_eq!(p.name, "nixos-system-web");
        assert_eq!(p.version.as_deref(), Some("1-23.11.20240101.abcdef0"));
        let p = parse("nixos-system-h1-1");
        assert_eq!(p.name, "nixos-system-h1");
        assert_eq!(p.version.as_deref(), Some("1"));
    }

    #[test]
    fn derivations_are_marked_and_keyed_apart_from_their_outputs() {
        let p = parse("hello-2.12.1.drv");
        assert!(p.is_drv);
        assert_eq!(p.name, "hello");
        assert_eq!(p.version.as_deref(), Some("2.12.1"));
        assert_eq!(p.key(), "hello.drv");
        assert_eq!(p.short(), "hello-2.12.1.drv");
    }

    #[test]
    fn kernel_module_trees_are_split_off_the_kernel() {
        let p = parse("linux-6.6.8-modules-shrunk");
        assert_eq!(p.name, "linux");
        assert_eq!(p.version.as_deref(), Some("6.6.8"));
        assert_eq!(p.key(), "linux^modules-shrunk");
        assert_eq!(parse("linux-6.6.8-modules").key(), "linux^modules");
    }

    #[test]
    fn paths_without_a_hash_are_parsed_by_their_base_name() {
        let p = StorePathName::parse("zlib-1.3");
        assert_eq!(p.hash, None);
        assert_eq!(p.name, "zlib");
        let p = StorePathName::parse("/nix/store/not-a-hash-1.0");
        assert_eq!(p.hash, None);
        assert_eq!(p.name, "not-a-hash");
    }

    #[test]
    fn short_names_drop_the_store_directory_and_hash() {
        assert_eq!(parse("openssl-3.0.13-dev").short(), "openssl-3.0.13-dev");
        assert_eq!(parse("etc").short(), "etc");
    }

    #[test]
    fn versions_compare_like_nix() {
        use Ordering::*;
        assert_eq!(compare_versions("3.0.13", "3.0.14"), Less);
        assert_eq!(compare_versions("3.0.9", "3.0.10"), Less);
        assert_eq!(compare_versions("1.0", "1.0"), Equal);
        assert_eq!(compare_versions("1.0", "1.0.1"), Less);
        assert_eq!(compare_versions("2.0pre1", "2.0"), Less);
        assert_eq!(compare_versions("1.0a", "1.0.1"), Less);
        assert_eq!(compare_versions("2.1", "2.0.5"), Greater);
        assert_eq!(compare_versions("1-23.11", "1-24.05"), Less);
    }
}
