//! The sandbox's binary cache host (`sandbox up --cache`): a namespace of its own on the bridge
//! whose busybox `httpd` serves `DIR/cache`, the `file://` cache the deployer pushes to, signed
//! with a key generated for this sandbox.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::state::{write_atomic, State};
use super::{flake, netns, run, Sandbox};

/// The port the cache host serves on.
pub const PORT: u16 = 8080;

/// The cache host as `up` created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheState {
    /// Its network namespace (`nd<id>-cache`).
    pub netns: String,
    /// The root-namespace end of its veth (same name).
    pub veth: String,
    /// Its address on the bridge (`10.77.K.250`).
    pub address: String,
    /// The pid of its httpd, once started.
    pub httpd_pid: Option<u32>,
}

impl CacheState {
    /// `http://10.77.K.250:8080`, where the hosts substitute from.
    pub fn url(&self) -> String {
        format!("http://{}:{PORT}", self.address)
    }
}

impl Sandbox {
    /// `DIR/cache`, the binary cache directory (pushed to as `file://DIR/cache`).
    pub fn cache_dir(&self) -> PathBuf {
        self.dir().join("cache")
    }

    /// `DIR/cache-key/secret` (signing) and `DIR/cache-key/public`.
    pub fn cache_key(&self, secret: bool) -> PathBuf {
        self.dir()
            .join("cache-key")
            .join(if secret { "secret" } else { "public" })
    }

    /// Makes the cache host answer: its key, directory, namespace and httpd.
    pub(super) fn ensure_cache(&self, state: &mut State, k: u8) -> anyhow::Result<()> {
        let netns = state.netns_name("cache");
        let wanted = CacheState {
            veth: netns.clone(),
            netns,
            address: format!("10.77.{k}.250"),
            httpd_pid: None,
        };
        let mut cache = match state.cache.take() {
            Some(c) if c.address == wanted.address => c,
            _ => wanted,
        };
        self.ensure_cache_key(&state.id)?;
        let dir = self.cache_dir();
        fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
        let info = dir.join("nix-cache-info");
        if !info.exists() {
            fs::write(
                &info,
                "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n",
            )
            .with_context(|| format!("failed to write {}", info.display()))?;
        }
        let alive = cache
            .httpd_pid
            .is_some_and(|pid| is_our_httpd(pid, &dir) && http_up(&cache.address));
        if !alive {
            if let Some(pid) = cache.httpd_pid.filter(|p| is_our_httpd(*p, &dir)) {
                netns::terminate(&[pid]);
            }
            // Record the namespace before creating it, so `down` can clean up after a failure.
            state.cache = Some(cache.clone());
            state.save(self.dir())?;
            netns::ensure_host_net(&cache.netns, &cache.veth, &state.bridge, &cache.address)
                .context("failed to set up the network of the cache host")?;
            cache.httpd_pid = Some(start_httpd(&cache, &dir)?);
        }
        state.cache = Some(cache);
        state.save(self.dir())
    }

    fn ensure_cache_key(&self, id: &str) -> anyhow::Result<()> {
        let (secret, public) = (self.cache_key(true), self.cache_key(false));
        if secret.exists() && public.exists() {
            return Ok(());
        }
        let parent = secret.parent().expect("has a parent");
        fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
        let name = format!("nixdeploy-sandbox-{id}-1");
        run(
            "nix-store",
            &[
                "--generate-binary-cache-key",
                &name,
                &secret.to_string_lossy(),
                &public.to_string_lossy(),
            ],
        )?;
        Ok(())
    }

    /// Writes the sandbox's `cache` into `fleet.json` (the flake passes it on as
    /// `nixdeploy.defaults.cache`).
    pub(super) fn write_fleet_cache(&self, cache: &CacheState) -> anyhow::Result<()> {
        let public = fs::read_to_string(self.cache_key(false))
            .context("failed to read the sandbox cache's public key")?;
        let path = flake::fleet_json(&self.flake_dir());
        let text = fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let mut fleet: Value = serde_json::from_str(&text)
            .with_context(|| format!("failed to parse {}", path.display()))?;
        let entry = json!({
            // zstd: quick to write; the sandbox's random contents do not compress anyway.
            "push": format!("file://{}?compression=zstd", self.cache_dir().display()),
            "url": cache.url(),
            "publicKey": public.trim(),
            "signingKeyFile": self.cache_key(true),
        });
        if fleet["cache"] == entry {
            return Ok(());
        }
        fleet["cache"] = entry;
        write_atomic(
            &path,
            (serde_json::to_string_pretty(&fleet)? + "\n").as_bytes(),
        )
    }
}

/// Stops the cache host: its httpd by pid (after checking it is ours), its namespace and veth.
pub(super) fn stop_cache(cache: &CacheState, dir: &Path) -> anyhow::Result<()> {
    if let Some(pid) = cache.httpd_pid.filter(|p| is_our_httpd(*p, dir)) {
        netns::terminate(&[pid]);
    }
    netns::delete_host_net(&cache.netns, &cache.veth).context("failed to remove the cache host")
}

/// Starts `busybox httpd` in the foreground inside the cache namespace and waits until it
/// answers; returns its pid (`ip netns exec` execs it, so the child is httpd itself).
fn start_httpd(cache: &CacheState, dir: &Path) -> anyhow::Result<u32> {
    let listen = format!("{}:{PORT}", cache.address);
    let child = Command::new("ip")
        .args(["netns", "exec", &cache.netns, flake::BUSYBOX, "httpd", "-f"])
        .args(["-p", &listen, "-h"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("failed to start busybox httpd for the cache host")?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_up(&cache.address) {
        if Instant::now() > deadline {
            bail!("the cache host's httpd did not answer on {listen} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(pid)
}

/// Whether something accepts TCP connections on the cache port.
fn http_up(address: &str) -> bool {
    match address.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::new(ip, PORT),
            Duration::from_millis(500),
        )
        .is_ok(),
        Err(_) => false,
    }
}

/// Whether `pid` is the httpd serving `dir` (pids get reused).
fn is_our_httpd(pid: u32, dir: &Path) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.contains(&b"httpd".as_slice()) && args.contains(&dir.as_os_str().as_encoded_bytes())
}
