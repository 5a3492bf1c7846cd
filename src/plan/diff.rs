//! The difference between two closures: packages added, removed and changed, sizes, reboot relevance.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::reboot::{self, BootParts, RebootReason};
use super::store_path::{compare_versions, StorePathName};

/// One store path of a closure with its NAR size, as `nix path-info --json` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorePathInfo {
    /// The full store path.
    pub path: String,
    /// The size of its NAR serialisation in bytes.
    pub nar_size: u64,
}

/// A package on one side of a diff: its key (see [`StorePathName::key`]) and version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Package {
    /// The package key (`openssl`, `openssl^dev`, `etc`).
    pub name: String,
    /// Its version, `null` for names without one.
    pub version: Option<String>,
}

/// A package whose version changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionChange {
    /// The package key.
    pub name: String,
    /// The version before.
    pub from: String,
    /// The version after.
    pub to: String,
}

impl VersionChange {
    /// Whether the new version sorts before the old one.
    pub fn is_downgrade(&self) -> bool {
        compare_versions(&self.to, &self.from).is_lt()
    }
}

/// What deploying `after` onto a machine running `before` changes (see `docs/closure-diff.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosureDiff {
    /// `before` was empty: nothing was deployed yet.
    pub first_deploy: bool,
    /// Packages (or versions of a package) only in `after`.
    pub added: Vec<Package>,
    /// Packages (or versions of a package) only in `before`.
    pub removed: Vec<Package>,
    /// Packages present on both sides whose version changed.
    pub changed: Vec<VersionChange>,
    /// Packages with the same version on both sides but a different store path (rebuilt).
    pub rebuilt: Vec<Package>,
    /// Sum of the NAR sizes of `before`, in bytes.
    pub size_before: u64,
    /// Sum of the NAR sizes of `after`, in bytes.
    pub size_after: u64,
    /// Store paths only in `after`.
    pub paths_added: usize,
    /// Store paths only in `before`.
    pub paths_removed: usize,
    /// Whether the change only fully applies after a reboot.
    pub reboot_relevant: bool,
    /// Which boot-time parts changed, in a fixed order.
    pub reboot_reasons: Vec<RebootReason>,
}

/// One closure grouped by package key, then by version, holding the store paths.
#[derive(Default)]
struct Grouped {
    paths: BTreeMap<String, u64>,
    by_key: BTreeMap<String, BTreeMap<Option<String>, BTreeSet<String>>>,
    names: BTreeMap<String, StorePathName>,
}

impl Grouped {
    fn new(infos: &[StorePathInfo]) -> Grouped {
        let mut grouped = Grouped::default();
        for info in infos {
            grouped.paths.insert(info.path.clone(), info.nar_size);
            let name = StorePathName::parse(&info.path);
            let key = name.key();
            grouped
                .by_key
                .entry(key.clone())
                .or_default()
                .entry(name.version.clone())
                .or_default()
                .insert(info.path.clone());
            grouped.names.entry(key).or_insert(name);
        }
        grouped
    }

    fn size(&self) -> u64 {
        self.paths.values().sum()
    }
}

impl ClosureDiff {
    /// The diff between two closures, judging reboot relevance by package names only.
    /// An empty `before` is a first deploy.
    pub fn between(before: &[StorePathInfo], after: &[StorePathInfo]) -> ClosureDiff {
        ClosureDiff::between_with_boot(before, after, None, None)
    }

    /// The diff between two closures. When both sides' [`BootParts`] are known they decide
    /// whether the kernel, initrd and init changed; module trees are always judged by name.
    /// Without both, every reason is judged by package names.
    pub fn between_with_boot(
        before: &[StorePathInfo],
        after: &[StorePathInfo],
        boot_before: Option<&BootParts>,
        boot_after: Option<&BootParts>,
    ) -> ClosureDiff {
        let (old, new) = (Grouped::new(before), Grouped::new(after));
        let mut diff = ClosureDiff {
            first_deploy: before.is_empty(),
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
            rebuilt: Vec::new(),
            size_before: old.size(),
            size_after: new.size(),
            paths_added: new
                .paths
                .keys()
                .filter(|p| !old.paths.contains_key(*p))
                .count(),
            paths_removed: old
                .paths
                .keys()
                .filter(|p| !new.paths.contains_key(*p))
                .count(),
            reboot_relevant: false,
            reboot_reasons: Vec::new(),
        };
        let empty = BTreeMap::new();
        let keys: BTreeSet<&String> = old.by_key.keys().chain(new.by_key.keys()).collect();
        let mut reasons = BTreeSet::new();
        for key in keys {
            let was = old.by_key.get(key).unwrap_or(&empty);
            let is = new.by_key.get(key).unwrap_or(&empty);
            if was == is {
                continue;
            }
            diff.compare_versions_of(key, was, is);
            let name = old.names.get(key).or_else(|| new.names.get(key));
            reasons.extend(name.and_then(reboot::reason_for_name));
        }
        if let (Some(b), Some(a)) = (boot_before, boot_after) {
            reasons.retain(|r| *r == RebootReason::KernelModules);
            reasons.extend(reboot::reasons_from_parts(b, a));
        }
        diff.reboot_relevant = !reasons.is_empty();
        diff.reboot_reasons = reasons.into_iter().collect();
        diff.sort();
        diff
    }

    /// Records how the versions of one package key differ. Versions only on one side are
    /// paired newest with newest into changes; what is left over is added or removed.
    fn compare_versions_of(
        &mut self,
        key: &str,
        was: &BTreeMap<Option<String>, BTreeSet<String>>,
        is: &BTreeMap<Option<String>, BTreeSet<String>>,
    ) {
        let package = |version: &Option<String>| Package {
            name: key.to_string(),
            version: version.clone(),
        };
        for (version, paths) in was {
            if is.get(version).is_some_and(|p| p != paths) {
                self.rebuilt.push(package(version));
            }
        }
        let only = |side: &BTreeMap<Option<String>, BTreeSet<String>>, other: &BTreeMap<_, _>| {
            let mut versions: Vec<Option<String>> = side
                .keys()
                .filter(|v| !other.contains_key(*v))
                .cloned()
                .collect();
            versions.sort_by(|a, b| match (a, b) {
                (Some(a), Some(b)) => compare_versions(a, b),
                _ => a.cmp(b),
            });
            versions
        };
        let (mut gone, mut came) = (only(was, is), only(is, was));
        while let (Some(Some(_)), Some(Some(_))) = (gone.last(), came.last()) {
            let (Some(Some(from)), Some(Some(to))) = (gone.pop(), came.pop()) else {
                unreachable!("both sides were just checked to end in a version");
            };
            self.changed.push(VersionChange {
                name: key.to_string(),
                from,
                to,
            });
        }
        self.removed.extend(gone.iter().map(package));
        self.added.extend(came.iter().map(package));
    }

    fn sort(&mut self) {
        self.added.sort();
        self.removed.sort();
        self.rebuilt.sort();
        self.changed
            .sort_by(|a, b| (&a.name, &a.from, &a.to).cmp(&(&b.name, &b.from, &b.to)));
    }

    /// True when both closures hold exactly the same store paths ("no change").
    pub fn is_empty(&self) -> bool {
        self.paths_added == 0 && self.paths_removed == 0 && self.reboot_reasons.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closure from `(base name, nar size)` pairs; the hash is derived from the name
    /// and a generation marker so rebuilt paths can be told apart.
    fn closure(generation: char, entries: &[(&str, u64)]) -> Vec<StorePathInfo> {
        entries
            .iter()
            .map(|(base, size)| StorePathInfo {
                path: format!("/nix/store/{}-{base}", hash(generation, base)),
                nar_size: *size,
            })
            .collect()
    }

    /// A fake but well-formed 32-character hash; `generation` distinguishes rebuilds.
    fn hash(generation: char, base: &str) -> String {
        let seed: String = base
            .chars()
            .filter(|c| c.is_ascii_lowercase() && !"eotu".contains(*c))
            .collect();
        format!("{generation}{seed}{}", "0".repeat(32))[..32].to_string()
    }

    fn pkg(name: &str, version: Option<&str>) -> Package {
        Package {
            name: name.into(),
            version: version.map(str::to_string),
        }
    }

    #[test]
    fn identical_closures_are_an_empty_diff() {
        let c = closure('a', &[("openssl-3.0.13", 100), ("etc", 5)]);
        let diff = ClosureDiff::between(&c, &c);
        assert!(diff.is_empty());
        assert!(!diff.first_deploy);
        assert_eq!((diff.size_before, diff.size_after), (105, 105));
    }

    #[test]
    fn a_version_bump_is_a_change_not_an_add_and_a_remove() {
        let before = closure('a', &[("openssl-3.0.13", 100), ("zlib-1.3", 10)]);
        let after = closure('a', &[("openssl-3.0.14", 110), ("zlib-1.3", 10)]);
        let diff = ClosureDiff::between(&before, &after);
        assert_eq!(
            diff.changed,
            vec![VersionChange {
                name: "openssl".into(),
                from: "3.0.13".into(),
                to: "3.0.14".into()
            }]
        );
        assert!(diff.added.is_empty() && diff.removed.is_empty());
        assert_eq!((diff.paths_added, diff.paths_removed), (1, 1));
        assert_eq!((diff.size_before, diff.size_after), (110, 120));
        assert!(!diff.is_empty());
        assert!(!diff.changed[0].is_downgrade());
    }

    #[test]
    fn packages_only_on_one_side_are_added_or_removed() {
        let before = closure('a', &[("curl-8.5.0", 1), ("etc", 1)]);
        let after = closure(
            'a',
            &[("htop-3.3.0", 1), ("etc", 1), ("openssl-3.0.13-man", 1)],
        );
        let diff = ClosureDiff::between(&before, &after);
        assert_eq!(
            diff.added,
            vec![
                pkg("htop", Some("3.3.0")),
                pkg("openssl^man", Some("3.0.13"))
            ]
        );
        assert_eq!(diff.removed, vec![pkg("curl", Some("8.5.0"))]);
    }

    #[test]
    fn the_same_version_under_a_new_hash_is_a_rebuild() {
        let before = closure('a', &[("etc", 1), ("bash-5.2", 1)]);
        let after = closure('b', &[("etc", 2)]);
        let diff =
            ClosureDiff::between(&before, &[after, closure('a', &[("bash-5.2", 1)])].concat());
        assert_eq!(diff.rebuilt, vec![pkg("etc", None)]);
        assert!(diff.changed.is_empty() && diff.added.is_empty());
        assert_eq!((diff.paths_added, diff.paths_removed), (1, 1));
    }

    #[test]
    fn several_versions_of_one_name_pair_newest_with_newest() {
        let before = closure('a', &[("python3-3.10.13", 1), ("python3-3.11.6", 1)]);
        let after = closure(
            'a',
            &[
                ("python3-3.11.6", 1),
                ("python3-3.12.1", 1),
                ("python3-3.13.0", 1),
            ],
        );
        let diff = ClosureDiff::between(&before, &after);
        assert_eq!(
            diff.changed,
            vec![VersionChange {
                name: "python3".into(),
                from: "3.10.13".into(),
                to: "3.13.0".into()
            }]
        );
        assert_eq!(diff.added, vec![pkg("python3", Some("3.12.1"))]);
        assert!(diff.removed.is_empty());
    }

    #[test]
    fn a_downgrade_is_marked_as_one() {
        let before = closure('a', &[("nginx-1.25.3", 1)]);
        let after = closure('a', &[("nginx-1.24.0", 1)]);
        assert!(ClosureDiff::between(&before, &after).changed[0].is_downgrade());
    }

    #[test]
    fn an_empty_before_is_a_first_deploy_of_everything() {
        let after = closure('a', &[("openssl-3.0.13", 100), ("etc", 5)]);
        let diff = ClosureDiff::between(&[], &after);
        assert!(diff.first_deploy);
        assert_eq!(diff.added.len(), 2);
        assert_eq!(
            (diff.paths_added, diff.size_before, diff.size_after),
            (2, 0, 105)
        );
    }

    #[test]
    fn duplicate_paths_count_once() {
        let c = closure('a', &[("zlib-1.3", 10)]);
        let diff = ClosureDiff::between(&[], &[c.clone(), c].concat());
        assert_eq!((diff.paths_added, diff.size_after), (1, 10));
    }

    #[test]
    fn a_kernel_change_is_reboot_relevant_by_name() {
        let before = closure(
            'a',
            &[
                ("linux-6.6.8", 1),
                ("linux-6.6.8-modules", 1),
                ("linux-pam-1.5.3", 1),
            ],
        );
        let after = closure(
            'a',
            &[
                ("linux-6.6.9", 1),
                ("linux-6.6.9-modules", 1),
                ("linux-pam-1.6.0", 1),
            ],
        );
        let diff = ClosureDiff::between(&before, &after);
        assert!(diff.reboot_relevant);
        assert_eq!(
            diff.reboot_reasons,
            vec![RebootReason::Kernel, RebootReason::KernelModules]
        );
    }

    #[test]
    fn userland_changes_are_not_reboot_relevant() {
        let before = closure('a', &[("openssl-3.0.13", 1), ("linux-pam-1.5.3", 1)]);
        let after = closure('a', &[("openssl-3.0.14", 1), ("linux-pam-1.6.0", 1)]);
        let diff = ClosureDiff::between(&before, &after);
        assert!(!diff.reboot_relevant);
        assert!(diff.reboot_reasons.is_empty());
    }

    #[test]
    fn explicit_boot_parts_override_name_guesses_for_kernel_initrd_and_init() {
        let before = closure('a', &[("systemd-254.6", 1), ("initrd-linux-6.6.8", 1)]);
        let after = closure('b', &[("systemd-254.6", 1), ("initrd-linux-6.6.8", 1)]);
        let parts = BootParts {
            kernel: "/nix/store/k/bzImage".into(),
            initrd: "/nix/store/i/initrd".into(),
            init: "/nix/store/s/init".into(),
        };
        let by_name = ClosureDiff::between(&before, &after);
        assert_eq!(
            by_name.reboot_reasons,
            vec![RebootReason::Initrd, RebootReason::Init]
        );
        let same = ClosureDiff::between_with_boot(&before, &after, Some(&parts), Some(&parts));
        assert!(!same.reboot_relevant);
        let new_kernel = BootParts {
            kernel: "/nix/store/k2/bzImage".into(),
            ..parts.clone()
        };
        let diff = ClosureDiff::between_with_boot(&before, &after, Some(&parts), Some(&new_kernel));
        assert_eq!(diff.reboot_reasons, vec![RebootReason::Kernel]);
    }

    #[test]
    fn the_json_shape_is_the_documented_one() {
        let before = closure('a', &[("openssl-3.0.13", 1)]);
        let after = closure('a', &[("openssl-3.0.14", 1), ("linux-6.6.8", 1)]);
        let json = serde_json::to_value(ClosureDiff::between(&before, &after)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "first_deploy": false,
                "added": [{"name": "linux", "version": "6.6.8"}],
                "removed": [],
                "changed": [{"name": "openssl", "from": "3.0.13", "to": "3.0.14"}],
                "rebuilt": [],
                "size_before": 1,
                "size_after": 2,
                "paths_added": 2,
                "paths_removed": 1,
                "reboot_relevant": true,
                "reboot_reasons": ["kernel"],
            })
        );
    }
}
