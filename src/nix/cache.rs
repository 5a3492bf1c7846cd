//! Argv builders for distribution through a binary cache: sign and push on the deployer, ask
//! the cache what it lacks, realise from the cache on a host (pure, unit-tested).

use std::path::Path;

use super::Nix;

/// How long a host waits to connect to the cache, and how often it tries, before nixdeploy
/// calls the cache unreachable and copies directly.
const CONNECT_TIMEOUT_SECS: u32 = 5;
const DOWNLOAD_ATTEMPTS: u32 = 3;

impl Nix {
    /// `nix store sign --key-file KEY --recursive PATHS`: adds the deployer's signature to the
    /// closures in the local store, so `nix copy` carries it to the cache.
    pub fn sign(&self, key_file: &Path, paths: &[String]) -> Vec<String> {
        let mut argv = self.base("store");
        argv.insert(4, "sign".into());
        argv.extend([
            "--key-file".into(),
            key_file.display().to_string(),
            "--recursive".into(),
        ]);
        argv.extend(paths.iter().cloned());
        argv
    }

    /// `nix path-info --json PATHS` (not recursive): each path's `narSize`.
    pub fn sizes(&self, paths: &[String]) -> Vec<String> {
        let mut argv = self.base("path-info");
        argv.push("--json".into());
        argv.extend(paths.iter().cloned());
        argv
    }

    /// `nix copy --to PUSH PATHS`: sends the closures to the cache; Nix queries the cache
    /// first and sends only the paths it lacks.
    pub fn push(&self, push_url: &str, paths: &[String]) -> Vec<String> {
        let mut argv = self.base("copy");
        argv.extend(["--to".into(), push_url.to_string()]);
        argv.extend(paths.iter().cloned());
        argv
    }
}

/// `nix-store --store URL --check-validity --print-invalid PATHS`: which of `paths` the cache
/// lacks (one per line).
pub fn cache_lacks_argv(push_url: &str, paths: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "nix-store",
        "--store",
        push_url,
        "--check-validity",
        "--print-invalid",
    ]
    .map(str::to_string)
    .to_vec();
    argv.extend(paths.iter().cloned());
    argv
}

/// What runs on a host (as root): realise `path` by substituting from `url`, trusting
/// `public_key` for this call only. Root (or a `trusted-users` member through the daemon) may
/// pass these settings; the host's own `nix.conf` is left alone, and its `require-sigs`
/// still applies, so an unsigned or wrongly signed path is refused.
pub fn realise_from_cache_argv(url: &str, public_key: &str, path: &str) -> Vec<String> {
    let mut argv: Vec<String> = vec!["nix-store".into(), "--realise".into(), path.to_string()];
    for (name, value) in [
        ("extra-substituters", url.to_string()),
        ("extra-trusted-public-keys", public_key.to_string()),
        ("connect-timeout", CONNECT_TIMEOUT_SECS.to_string()),
        ("download-attempts", DOWNLOAD_ATTEMPTS.to_string()),
    ] {
        argv.extend(["--option".into(), name.into(), value]);
    }
    argv
}

/// The sum of `narSize` in `nix path-info --json` output (0 when it cannot be read).
pub fn total_nar_size(json: &str) -> u64 {
    serde_json::from_str::<Vec<serde_json::Value>>(json)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p["narSize"].as_u64())
        .sum()
}

/// Why a realise from the cache failed, read once from its stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealiseFailure {
    /// The host could not reach the cache (connection refused, timeout, no route, DNS):
    /// nixdeploy falls back to a direct copy.
    Unreachable(String),
    /// The cache answered but its paths are not signed by the trusted key: never bypassed.
    Untrusted(String),
    /// The cache lacks a path, or anything else.
    Other(String),
}

impl RealiseFailure {
    /// Classifies the stderr of a failed [`realise_from_cache_argv`] run from cache `url`.
    /// Only a failure to fetch *this* cache's `nix-cache-info` counts as unreachable: the
    /// host's own substituters (cache.nixos.org) being out of reach says nothing about ours.
    pub fn parse(stderr: &str, url: &str) -> RealiseFailure {
        let lines: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let find = |needle: &str| {
            lines
                .iter()
                .find(|l| l.contains(needle))
                .map(|l| l.to_string())
        };
        if let Some(l) = find("is not signed by any of the keys") {
            return RealiseFailure::Untrusted(l);
        }
        // An HTTP cache's messages carry its URL; an S3 one's only the file name.
        let base = url.split('?').next().unwrap_or(url).trim_end_matches('/');
        let ours = |l: &str| !url.starts_with("http") || l.contains(base);
        if let Some(l) = lines.iter().find(|l| {
            l.contains("nix-cache-info")
                && (l.contains("unable to download") || l.contains("AWS error"))
                && ours(l)
        }) {
            return RealiseFailure::Unreachable(l.trim_start_matches("warning: ").to_string());
        }
        let last = lines
            .iter()
            .rev()
            .find(|l| l.starts_with("error"))
            .or(lines.last())
            .map(|l| l.to_string())
            .unwrap_or_else(|| "no output".to_string());
        RealiseFailure::Other(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_and_pushing_name_the_key_file_and_the_store() {
        let nix = Nix::default();
        let argv = nix.sign(Path::new("/etc/nd/cache.sk"), &["/nix/store/a".into()]);
        assert_eq!(&argv[3..5], &["store", "sign"]);
        assert!(argv
            .windows(2)
            .any(|w| w == ["--key-file", "/etc/nd/cache.sk"]));
        assert!(argv.contains(&"--recursive".to_string()));
        let argv = nix.push("s3://b?region=x", &["/nix/store/a".into()]);
        assert!(argv.windows(2).any(|w| w == ["--to", "s3://b?region=x"]));
        assert!(!argv.contains(&"--no-check-sigs".to_string()));
    }

    #[test]
    fn sizes_add_up_from_path_info() {
        let json =
            r#"[{"path":"/nix/store/a","narSize":1048576},{"path":"/nix/store/b","narSize":512}]"#;
        assert_eq!(total_nar_size(json), 1_049_088);
        assert_eq!(total_nar_size("not json"), 0);
    }

    #[test]
    fn the_host_trusts_the_cache_key_for_this_call_only() {
        let argv = realise_from_cache_argv("http://c:8080", "c-1:KEY=", "/nix/store/s");
        assert_eq!(&argv[..3], &["nix-store", "--realise", "/nix/store/s"]);
        assert!(argv
            .windows(3)
            .any(|w| w == ["--option", "extra-substituters", "http://c:8080"]));
        assert!(argv
            .windows(3)
            .any(|w| w == ["--option", "extra-trusted-public-keys", "c-1:KEY="]));
        crate::transport::assert_valid_shell(&crate::transport::command_line(&argv));
    }

    #[test]
    fn failures_are_classified_from_what_nix_2_8_prints() {
        let unreachable = "warning: error: unable to download 'http://10.77.7.250:8080/nix-cache-info': Couldn't connect to server (7); retrying in 262 ms\n\
            warning: unable to download 'http://10.77.7.250:8080/nix-cache-info': Couldn't connect to server (7)\n\
            don't know how to build these paths:\n  /nix/store/x\nerror: build of '/nix/store/x' failed\n";
        let url = "http://10.77.7.250:8080";
        assert!(matches!(
            RealiseFailure::parse(unreachable, url),
            RealiseFailure::Unreachable(l) if l.contains("Couldn't connect")
        ));
        let theirs =
            "warning: unable to download 'https://cache.nixos.org/nix-cache-info': Timeout\n\
            error: build of '/nix/store/x' failed\n";
        assert!(matches!(
            RealiseFailure::parse(theirs, url),
            RealiseFailure::Other(_)
        ));
        let s3 = "warning: AWS error fetching 'nix-cache-info': Unable to connect to endpoint\n";
        assert!(matches!(
            RealiseFailure::parse(s3, "s3://b?region=x"),
            RealiseFailure::Unreachable(_)
        ));
        let untrusted = "warning: the substitute for '/nix/store/x' from 'http://c' is not signed by any of the keys in 'trusted-public-keys'\n\
            error: build of '/nix/store/x' failed\n";
        assert!(matches!(
            RealiseFailure::parse(untrusted, "http://c"),
            RealiseFailure::Untrusted(_)
        ));
        assert_eq!(
            RealiseFailure::parse(
                "don't know how to build these paths:\nerror: build of '/nix/store/x' failed\n",
                "http://c"
            ),
            RealiseFailure::Other("error: build of '/nix/store/x' failed".into())
        );
    }
}
