//! Whether a closure change only takes full effect after a reboot (kernel, initrd, modules, init).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::store_path::StorePathName;

/// The parts of a system that a running machine only picks up when it boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootReason {
    /// The kernel changed.
    Kernel,
    /// The initial ramdisk changed.
    Initrd,
    /// The kernel module tree changed.
    #[serde(rename = "kernel modules")]
    KernelModules,
    /// The init (systemd, or the stage-2 init script) changed.
    Init,
}

impl RebootReason {
    /// How the reason reads in text (`kernel`, `kernel modules`).
    pub fn as_str(self) -> &'static str {
        match self {
            RebootReason::Kernel => "kernel",
            RebootReason::Initrd => "initrd",
            RebootReason::KernelModules => "kernel modules",
            RebootReason::Init => "init",
        }
    }
}

/// The boot-time parts of a NixOS system as store paths, read by the caller from the
/// symlinks `toplevel/kernel`, `toplevel/initrd` and `toplevel/init`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BootParts {
    /// Where `toplevel/kernel` points.
    pub kernel: String,
    /// Where `toplevel/initrd` points.
    pub initrd: String,
    /// Where `toplevel/init` points.
    pub init: String,
}

/// Kernel flavours whose package name is not plain `linux`.
const KERNEL_NAMES: &[&str] = &[
    "linux",
    "linux-hardened",
    "linux-libre",
    "linux-lqx",
    "linux-rt",
    "linux-xanmod",
    "linux-zen",
];

/// Outputs that hold only documentation or headers and never affect booting.
const INERT_OUTPUTS: &[&str] = &["dev", "devdoc", "doc", "info", "man"];

/// The reason a changed store path of this name would be reboot-relevant, judged by its
/// name alone: `linux` (and known flavours) is the kernel, its `modules` outputs and
/// `*-kernel-modules` are modules, `initrd*`/`*-initrd` the initrd, `systemd*` the init.
/// Documentation and header outputs never count. `linux-pam` or `linux-headers` are not
/// the kernel.
pub fn reason_for_name(name: &StorePathName) -> Option<RebootReason> {
    let output = name.output.as_deref();
    if output.is_some_and(|o| INERT_OUTPUTS.contains(&o)) || name.is_drv {
        return None;
    }
    let n = name.name.as_str();
    if KERNEL_NAMES.contains(&n) {
        return Some(match output {
            Some("modules" | "modules-shrunk") => RebootReason::KernelModules,
            _ => RebootReason::Kernel,
        });
    }
    if n == "kernel-modules" || n.ends_with("-kernel-modules") {
        return Some(RebootReason::KernelModules);
    }
    // `stage-1-initrd` parses as name `stage`, so the suffix is checked on the whole name.
    if n == "initrd" || n.starts_with("initrd-") || name.short().ends_with("-initrd") {
        return Some(RebootReason::Initrd);
    }
    if n == "systemd" || n.starts_with("systemd-") {
        return Some(RebootReason::Init);
    }
    None
}

/// The reasons given by explicit boot parts: every part whose store path differs.
pub fn reasons_from_parts(before: &BootParts, after: &BootParts) -> BTreeSet<RebootReason> {
    [
        (before.kernel != after.kernel, RebootReason::Kernel),
        (before.initrd != after.initrd, RebootReason::Initrd),
        (before.init != after.init, RebootReason::Init),
    ]
    .into_iter()
    .filter_map(|(changed, reason)| changed.then_some(reason))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(base: &str) -> Option<RebootReason> {
        reason_for_name(&StorePathName::parse(base))
    }

    #[test]
    fn the_kernel_is_recognised_by_name_but_not_its_namesakes() {
        assert_eq!(reason("linux-6.6.8"), Some(RebootReason::Kernel));
        assert_eq!(reason("linux-zen-6.6.8"), Some(RebootReason::Kernel));
        assert_eq!(reason("linux-pam-1.5.3"), None);
        assert_eq!(reason("linux-headers-6.6"), None);
        assert_eq!(reason("linux-6.6.8-dev"), None);
    }

    #[test]
    fn module_trees_initrds_and_systemd_are_recognised() {
        assert_eq!(
            reason("linux-6.6.8-modules"),
            Some(RebootReason::KernelModules)
        );
        assert_eq!(
            reason("linux-6.6.8-modules-shrunk"),
            Some(RebootReason::KernelModules)
        );
        assert_eq!(reason("kernel-modules"), Some(RebootReason::KernelModules));
        assert_eq!(reason("initrd-linux-6.6.8"), Some(RebootReason::Initrd));
        assert_eq!(reason("stage-1-initrd"), Some(RebootReason::Initrd));
        assert_eq!(reason("systemd-254.6"), Some(RebootReason::Init));
        assert_eq!(reason("systemd-minimal-254.6"), Some(RebootReason::Init));
        assert_eq!(reason("systemd-254.6-man"), None);
        assert_eq!(reason("openssl-3.0.13"), None);
    }

    #[test]
    fn explicit_boot_parts_report_exactly_the_parts_that_differ() {
        let before = BootParts {
            kernel: "/nix/store/a-linux-6.6.8/bzImage".into(),
            initrd: "/nix/store/b-initrd-linux-6.6.8/initrd".into(),
            init: "/nix/store/c-nixos-system/init".into(),
        };
        let mut after = before.clone();
        assert!(reasons_from_parts(&before, &after).is_empty());
        after.initrd = "/nix/store/d-initrd-linux-6.6.8/initrd".into();
        assert_eq!(
            reasons_from_parts(&before, &after),
            BTreeSet::from([RebootReason::Initrd])
        );
    }
}
