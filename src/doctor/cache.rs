//! Checks of the binary caches the selected hosts use (`cache` in the inventory): the deployer
//! can push there and holds the matching signing key; each host can reach the substituter.
//! Read-only: nothing is written to the cache or to a host.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Check;
use crate::fleet::{BinaryCache, Host};
use crate::transport::{command_line, Target};

const TIMEOUT: Duration = Duration::from_secs(20);

/// `nix store ping --store URL` with a short connect timeout and one attempt.
pub fn ping_argv(url: &str) -> Vec<String> {
    [
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "store",
        "ping",
        "--store",
        url,
        "--option",
        "connect-timeout",
        "5",
        "--option",
        "download-attempts",
        "1",
    ]
    .map(str::to_string)
    .to_vec()
}

/// The deployer's rows for every distinct cache of `hosts`: `cache.push` and `cache.key`.
pub async fn check_deployer_caches(hosts: &[Arc<Host>]) -> Vec<Check> {
    let mut caches: Vec<&BinaryCache> = Vec::new();
    for cache in hosts.iter().filter_map(|h| h.cache.as_ref()) {
        if !caches.contains(&cache) {
            caches.push(cache);
        }
    }
    let mut checks = Vec::new();
    for cache in caches {
        checks.push(push(cache).await);
        checks.push(key(cache));
    }
    checks
}

/// Can the deployer push? A `file://` cache: its directory is writable. Any other store: it
/// answers `nix store ping` (write permission itself is only proven by a push).
async fn push(cache: &BinaryCache) -> Check {
    const NAME: &str = "cache.push";
    if let Some(rest) = cache.push.strip_prefix("file://") {
        let dir = rest.split('?').next().unwrap_or(rest);
        let probe = Path::new(dir)
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        let path = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: access only reads the NUL-terminated path.
        let writable = unsafe { libc::access(path.as_ptr(), libc::W_OK) } == 0;
        return if writable {
            Check::ok(None, NAME, format!("{} is writable here", probe.display()))
        } else {
            Check::fail(
                None,
                NAME,
                format!("{} is not writable by this user", probe.display()),
                format!("run the deploy as a user who may write {dir}, or change cache.push"),
            )
        };
    }
    match run_local(&ping_argv(&cache.push)).await {
        Ok(()) => Check::ok(
            None,
            NAME,
            format!(
                "{} answers (write access is proven by the first push)",
                cache.push
            ),
        ),
        Err(line) => Check::fail(
            None,
            NAME,
            format!("{} does not answer: {line}", cache.push),
            "check the URL and this machine's credentials for it (for S3: AWS_PROFILE or \
             ~/.aws/credentials; see docs/binary-cache.md)",
        ),
    }
}

/// The signing key: readable, and named like the public key the hosts will trust.
fn key(cache: &BinaryCache) -> Check {
    const NAME: &str = "cache.key";
    let Some(file) = &cache.signing_key_file else {
        return Check::warn(
            None,
            NAME,
            "no signingKeyFile: nixdeploy pushes paths as they are",
            "set cache.signingKeyFile unless the cache signs what it receives itself (attic, \
             cachix); hosts refuse unsigned paths",
        );
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(err) => {
            return Check::fail(
                None,
                NAME,
                format!("cannot read {}: {err}", file.display()),
                "create it with nix-store --generate-binary-cache-key NAME SECRET PUBLIC, or fix signingKeyFile",
            )
        }
    };
    let secret_name = text.trim().split(':').next().unwrap_or_default();
    let public_name = cache.public_key.split(':').next().unwrap_or_default();
    if secret_name != public_name {
        return Check::fail(
            None,
            NAME,
            format!(
                "{} is the key '{secret_name}' but publicKey is '{public_name}'",
                file.display()
            ),
            "set publicKey to the public half of signingKeyFile (the file written beside it by \
             nix-store --generate-binary-cache-key)",
        );
    }
    Check::ok(
        None,
        NAME,
        format!("{} signs as '{secret_name}'", file.display()),
    )
}

/// `cache.reach` on one host: its Nix reaches the substituter (read-only `nix store ping`).
pub async fn reach(host: &str, target: &Target, cache: &BinaryCache) -> Check {
    const NAME: &str = "cache.reach";
    let script = format!("{} 2>&1", command_line(&ping_argv(&cache.url)));
    match target.run_fresh(&script, TIMEOUT).await {
        Ok(out) if out.success() => Check::ok(
            Some(host),
            NAME,
            format!("{} answers from the host", cache.url),
        ),
        Ok(out) => Check::warn(
            Some(host),
            NAME,
            format!(
                "{} does not answer from the host: {}",
                cache.url,
                out.stdout
                    .lines()
                    .rev()
                    .find(|l| l.starts_with("error"))
                    .unwrap_or(out.stdout.trim())
            ),
            "open the way from the host to the cache (firewall, DNS, proxy); until then \
             `via: \"cache\"` copies to this host directly",
        ),
        Err(err) => Check::warn(
            Some(host),
            NAME,
            format!("could not run the check: {err:#}"),
            "see ssh.reach",
        ),
    }
}

async fn run_local(argv: &[String]) -> Result<(), String> {
    let out = tokio::time::timeout(
        TIMEOUT,
        tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| format!("cannot run nix: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(err
        .lines()
        .rev()
        .find(|l| l.starts_with("error"))
        .unwrap_or(err.trim())
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ping_is_one_quick_attempt() {
        let line = command_line(&ping_argv("http://c:8080"));
        assert!(line.contains("store ping --store http://c:8080"), "{line}");
        assert!(line.contains("download-attempts 1"));
        crate::transport::assert_valid_shell(&line);
    }

    #[test]
    fn a_secret_key_named_unlike_the_public_key_fails() {
        let dir = tempfile::TempDir::new().unwrap();
        let sk = dir.path().join("sk");
        std::fs::write(&sk, "other-1:AAAA\n").unwrap();
        let cache = BinaryCache {
            push: "file:///c".into(),
            url: "http://c".into(),
            public_key: "cache-1:vWRv1eF5Pyvrlwuc30R7HHx1cgAsTqoBekPKiAK0DDI=".into(),
            signing_key_file: Some(sk),
        };
        let c = key(&cache);
        assert_eq!(c.status, super::super::Status::Fail);
        assert!(c.detail.contains("'other-1'"), "{}", c.detail);
    }
}
