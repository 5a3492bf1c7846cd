//! Pure argv builders for every Nix invocation nixdeploy makes.

use crate::transport::Target;

/// How to call Nix: the experimental features we rely on and extra `--option`s for every call.
#[derive(Debug, Clone, Default)]
pub struct Nix {
    /// `--option NAME VALUE` pairs added to every `nix` call (inventory `nixOptions`).
    pub options: Vec<(String, String)>,
}

/// A remote store reached over ssh (`ssh-ng://user@host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUri(pub String);

impl StoreUri {
    /// The `ssh-ng://` store of a target.
    pub fn of(target: &Target) -> StoreUri {
        StoreUri(format!("ssh-ng://{}", target.display()))
    }
}

impl Nix {
    pub(super) fn base(&self, subcommand: &str) -> Vec<String> {
        let mut argv = vec![
            "nix".to_string(),
            "--extra-experimental-features".into(),
            "nix-command flakes".into(),
            subcommand.into(),
        ];
        for (name, value) in &self.options {
            argv.extend(["--option".to_string(), name.clone(), value.clone()]);
        }
        argv
    }

    /// One `nix build` of many derivations: `--keep-going` so one broken host does not stop the
    /// others, `--json` for the out paths. `builders` is a Nix `builders` spec (remote builds).
    pub fn build(
        &self,
        drvs: &[String],
        builders: Option<&str>,
        local_jobs: Option<u32>,
    ) -> Vec<String> {
        let mut argv = self.base("build");
        argv.extend([
            "--no-link".into(),
            "--json".into(),
            "--keep-going".into(),
            "-L".into(),
        ]);
        if let Some(spec) = builders {
            argv.extend(["--builders".into(), spec.to_string()]);
            // Remote builders copy their inputs from us, not from a cache they may not reach.
            argv.extend([
                "--option".into(),
                "builders-use-substitutes".into(),
                "false".into(),
            ]);
        }
        if let Some(jobs) = local_jobs {
            argv.extend(["--max-jobs".into(), jobs.to_string()]);
        }
        argv.extend(drvs.iter().cloned());
        argv
    }

    /// `nix copy` of `paths` into `to`. Signatures are not checked (root deploys its own unsigned
    /// builds, as colmena and deploy-rs do); `substitute` lets the target fetch from its caches.
    pub fn copy_to(
        &self,
        to: &StoreUri,
        paths: &[String],
        substitute: bool,
        derivation: bool,
    ) -> Vec<String> {
        let mut argv = self.base("copy");
        argv.extend(["--no-check-sigs".into(), "--to".into(), to.0.clone()]);
        if substitute {
            argv.push("--substitute-on-destination".into());
        }
        if derivation {
            argv.push("--derivation".into());
        }
        argv.extend(paths.iter().cloned());
        argv
    }

    /// `nix path-info --json --recursive PATH` on the local store (closure with sizes).
    pub fn path_info(&self, path: &str) -> Vec<String> {
        let mut argv = self.base("path-info");
        argv.extend(["--json".into(), "--recursive".into(), path.to_string()]);
        argv
    }
}

/// `nix-store -qR PATH`: the closure of a path, one store path per line.
pub fn closure_argv(path: &str) -> Vec<String> {
    vec![
        "nix-store".into(),
        "--query".into(),
        "--requisites".into(),
        path.to_string(),
    ]
}

/// `nix-store --check-validity PATHS`: succeeds when every path is valid in the local store.
pub fn validity_argv(paths: &[String]) -> Vec<String> {
    let mut argv = vec!["nix-store".to_string(), "--check-validity".into()];
    argv.extend(paths.iter().cloned());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::HostName;

    fn nix() -> Nix {
        Nix {
            options: vec![("substituters".into(), "".into())],
        }
    }

    #[test]
    fn one_build_for_many_derivations() {
        let argv = nix().build(
            &["/nix/store/a.drv".into(), "/nix/store/b.drv".into()],
            None,
            None,
        );
        assert_eq!(
            &argv[..4],
            &[
                "nix",
                "--extra-experimental-features",
                "nix-command flakes",
                "build"
            ]
        );
        assert!(argv
            .windows(3)
            .any(|w| w == ["--option", "substituters", ""]));
        assert!(argv.contains(&"--keep-going".to_string()));
        assert_eq!(
            &argv[argv.len() - 2..],
            &["/nix/store/a.drv", "/nix/store/b.drv"]
        );
    }

    #[test]
    fn remote_builds_use_nix_builders() {
        let argv = nix().build(
            &["/nix/store/a.drv".into()],
            Some("ssh-ng://b1 aarch64-linux - 2 1"),
            Some(0),
        );
        assert!(argv
            .windows(2)
            .any(|w| w == ["--builders", "ssh-ng://b1 aarch64-linux - 2 1"]));
        assert!(argv.windows(2).any(|w| w == ["--max-jobs", "0"]));
    }

    #[test]
    fn copy_skips_signatures_and_substitutes_on_destination() {
        let to = StoreUri::of(&Target {
            host: HostName::new("h1"),
            destination: "h1".into(),
            user: Some("root".into()),
            port: None,
            config: None,
            options: vec![],
            system: "x86_64-linux".into(),
            local: false,
            escalation: Default::default(),
        });
        assert_eq!(to.0, "ssh-ng://root@h1");
        let argv = nix().copy_to(&to, &["/nix/store/x".into()], true, false);
        assert!(argv.contains(&"--no-check-sigs".to_string()));
        assert!(argv.contains(&"--substitute-on-destination".to_string()));
        assert!(!argv.contains(&"--derivation".to_string()));
        let argv = nix().sign(
            std::path::Path::new("/k.sec"),
            &["/nix/store/x".to_string()],
        );
        assert_eq!(argv[3..5], ["store", "sign"]);
        assert_eq!(
            argv[argv.len() - 4..],
            ["--key-file", "/k.sec", "--recursive", "/nix/store/x"]
        );
        let argv = nix().copy_to(&to, &["/nix/store/x.drv".into()], false, true);
        assert!(!argv.contains(&"--substitute-on-destination".to_string()));
        assert!(argv.contains(&"--derivation".to_string()));
    }
}
