//! Disposable local SSH targets: network namespaces running sshd, each with its own Nix store.

pub mod client;
pub mod fault;
pub mod flake;
pub mod netns;
mod reboot;
pub mod sshd;
pub mod state;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::exit::Failure;
use sshd::HostDirs;
use state::{HostState, Lock, Role, State};

/// Most targets one sandbox holds (see [`netns::host_address`]).
pub const MAX_HOSTS: usize = 256;
/// Most builders one sandbox holds (addresses `.201`–`.208`).
pub const MAX_BUILDERS: usize = 8;
/// How many hosts are set up at once.
const WORKERS: usize = 8;

/// What `up` should bring up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpOptions {
    /// Targets `h1`…`hN` (1–64).
    pub hosts: usize,
    /// Builders `b1`…`bN` (0–8).
    pub builders: usize,
    /// Closure size per host in KiB, for a new `fleet.json` (half shared, half unique).
    pub size_kib: u64,
}

/// What `status` reports (and `status --json` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The flake reference of the sandbox flake (`path:/abs/DIR/flake`).
    pub flake: String,
    /// The ssh config with one alias per host.
    pub ssh_config: PathBuf,
    /// Every host, targets then builders.
    pub hosts: Vec<HostStatus>,
}

/// One host in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// `h1`, `b1`, ...
    pub name: String,
    /// Its IPv4 address.
    pub address: String,
    /// Whether its sshd accepts TCP connections on port 22.
    pub up: bool,
}

impl Status {
    /// The human-readable table `up` and `status` print.
    pub fn render(&self) -> String {
        let mut text = format!(
            "flake       {}\nssh config  {}\n\nHOST  ADDRESS        UP\n",
            self.flake,
            self.ssh_config.display()
        );
        for h in &self.hosts {
            let up = if h.up { "yes" } else { "no" };
            text.push_str(&format!("{:<5} {:<14} {up}\n", h.name, h.address));
        }
        text
    }
}

/// A sandbox directory (which may not be up yet).
#[derive(Debug, Clone)]
pub struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    /// The sandbox in `dir` (made absolute; nothing is created yet).
    pub fn open(dir: impl AsRef<Path>) -> anyhow::Result<Sandbox> {
        let dir = std::path::absolute(dir.as_ref())
            .with_context(|| format!("failed to resolve {}", dir.as_ref().display()))?;
        let dir = fs::canonicalize(&dir).unwrap_or(dir);
        Ok(Sandbox { dir })
    }

    /// `state_dir()/sandbox`, used when no `--dir` is given.
    pub fn default_dir() -> PathBuf {
        crate::paths::state_dir().join("sandbox")
    }

    /// The sandbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `path:/abs/DIR/flake`, usable with `--flake`.
    pub fn flake_ref(&self) -> String {
        format!("path:{}", self.flake_dir().display())
    }

    /// `DIR/flake`.
    pub fn flake_dir(&self) -> PathBuf {
        self.dir.join("flake")
    }

    /// `DIR/ssh_config`.
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    /// The client's private key `DIR/id_ed25519`.
    pub fn identity(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// `DIR/known_hosts`.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// Where host `name`'s private `/nix`, `/run`, `/root`, `/etc/nix` and `/etc/ssh` live.
    pub fn host_dirs(&self, name: &str) -> HostDirs {
        HostDirs::new(&self.dir, name)
    }

    /// Brings up whatever of the requested hosts is missing (keeping keys and stores), removes
    /// hosts beyond the requested counts, and writes the client files and the flake.
    pub fn up(&self, opts: &UpOptions) -> anyhow::Result<Status> {
        validate(opts)?;
        preflight()?;
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("failed to create {}", self.dir.display()))?;
        let sandbox = Sandbox::open(&self.dir)?;
        let _lock = Lock::acquire(&sandbox.dir.join(".lock"))?;
        sandbox.up_locked(opts)?;
        sandbox.status()
    }

    fn up_locked(&self, opts: &UpOptions) -> anyhow::Result<()> {
        let mut state = State::load(&self.dir)?.unwrap_or_else(|| State::new(&self.dir));
        state.save(&self.dir)?;
        sshd::ensure_key(&self.identity(), "nixdeploy-sandbox")?;
        let k = netns::ensure_bridge(&state)?;
        state.subnet = Some(k);

        let wanted = wanted_hosts(&state, k, opts);
        let surplus: Vec<HostState> = state
            .hosts
            .iter()
            .filter(|h| !wanted.iter().any(|w| w.name == h.name))
            .cloned()
            .collect();
        for host in &surplus {
            stop_host(host)?;
            let root = self.host_dirs(&host.name).root;
            if root.exists() {
                fs::remove_dir_all(&root)
                    .with_context(|| format!("failed to remove {}", root.display()))?;
            }
        }
        // Record every object before creating it, so `down` can clean up after a failed `up`.
        state.hosts = merge_pids(&state.hosts, wanted);
        state.save(&self.dir)?;

        let pids = Mutex::new(Vec::new());
        let errors = parallel(&state.hosts, |host| {
            let pid = self.ensure_host(&state, host)?;
            pids.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((host.name.clone(), pid));
            Ok(())
        });
        for (name, pid) in pids.into_inner().unwrap_or_else(|e| e.into_inner()) {
            if let Some(h) = state.hosts.iter_mut().find(|h| h.name == name) {
                h.sshd_pid = Some(pid);
            }
        }
        state.save(&self.dir)?;
        if let Some(err) = errors.into_iter().next() {
            return Err(err);
        }
        self.write_client_files(&state, opts)
    }

    /// Makes one host answer: keeps it if its sshd is ours and answers, else rebuilds it.
    fn ensure_host(&self, state: &State, host: &HostState) -> anyhow::Result<u32> {
        let dirs = self.host_dirs(&host.name);
        if let Some(pid) = host.sshd_pid {
            if sshd::is_our_sshd(pid, &host.netns)
                && sshd::tcp_up(&host.address, Duration::from_secs(1))
            {
                return Ok(pid);
            }
        }
        stop_host(host).with_context(|| format!("failed to reset host {}", host.name))?;
        let builder = host.role == Role::Builder;
        let client_pub = self.identity().with_extension("pub");
        sshd::prepare(&dirs, &host.address, builder, &client_pub)
            .with_context(|| format!("failed to prepare host {}", host.name))?;
        let exe = std::env::current_exe().context("failed to find the nixdeploy binary")?;
        let reboot = dirs.bin().join("reboot");
        std::fs::write(&reboot, reboot::reboot_command(&exe, &self.dir, &host.name))
            .with_context(|| format!("failed to write {}", reboot.display()))?;
        std::fs::set_permissions(&reboot, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        netns::ensure_host_net(&host.netns, &host.veth, &state.bridge, &host.address)
            .with_context(|| format!("failed to set up the network of host {}", host.name))?;
        sshd::start(&host.netns, &host.name, &host.address, &dirs)
            .with_context(|| format!("failed to start host {}", host.name))
    }

    fn write_client_files(&self, state: &State, opts: &UpOptions) -> anyhow::Result<()> {
        let keys: Vec<String> = state
            .hosts
            .iter()
            .map(|h| {
                let path = self.host_dirs(&h.name).host_key_pub();
                fs::read_to_string(&path)
                    .with_context(|| format!("failed to read host key {}", path.display()))
            })
            .collect::<anyhow::Result<_>>()?;
        let endpoints: Vec<client::Endpoint<'_>> = state
            .hosts
            .iter()
            .zip(&keys)
            .map(|(h, key)| client::Endpoint {
                name: &h.name,
                address: &h.address,
                host_key: key,
            })
            .collect();
        state::write_atomic(
            &self.known_hosts(),
            client::known_hosts(&endpoints).as_bytes(),
        )?;
        let config = client::ssh_config(&endpoints, &self.identity(), &self.known_hosts())?;
        state::write_atomic(&self.ssh_config(), config.as_bytes())?;
        flake::write(
            &self.flake_dir(),
            &self.ssh_config(),
            &state.hosts,
            opts.size_kib,
        )
    }

    /// Every host and whether it answers; a user error when nothing was brought up here.
    pub fn status(&self) -> anyhow::Result<Status> {
        let Some(state) = State::load(&self.dir)? else {
            return Err(Failure::input(format!(
                "no sandbox in {dir} (bring one up with `nixdeploy sandbox up --dir {dir}`)",
                dir = self.dir.display()
            ))
            .into());
        };
        let up = Mutex::new(Vec::new());
        parallel(&state.hosts, |h| {
            let answers = sshd::tcp_up(&h.address, Duration::from_secs(1));
            up.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((h.name.clone(), answers));
            Ok(())
        });
        let up = up.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok(Status {
            flake: self.flake_ref(),
            ssh_config: self.ssh_config(),
            hosts: state
                .hosts
                .iter()
                .map(|h| HostStatus {
                    name: h.name.clone(),
                    address: h.address.clone(),
                    up: up.iter().any(|(n, u)| *n == h.name && *u),
                })
                .collect(),
        })
    }

    /// Removes every process, namespace, link and file the sandbox created, then `DIR` itself;
    /// a directory without a sandbox state is left alone. Returns whether anything was removed.
    pub fn down(&self) -> anyhow::Result<bool> {
        if !self.dir.join(state::STATE_FILE).exists() {
            return Ok(false);
        }
        preflight()?;
        let _lock = Lock::acquire(&self.dir.join(".lock"))?;
        let Some(state) = State::load(&self.dir)? else {
            return Ok(false);
        };
        let errors = parallel(&state.hosts, stop_host);
        if let Some(err) = errors.into_iter().next() {
            return Err(err);
        }
        netns::delete_bridge(&state.bridge)?;
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("failed to remove {}", self.dir.display()))?;
        Ok(true)
    }
}

/// Stops a host: its sshd by pid (after checking it is ours), then whatever else runs in its
/// namespace, then the namespace and the veth.
fn stop_host(host: &HostState) -> anyhow::Result<()> {
    if let Some(pid) = host.sshd_pid {
        if sshd::is_our_sshd(pid, &host.netns) {
            netns::terminate(&[pid]);
        }
    }
    netns::delete_host_net(&host.netns, &host.veth)
        .with_context(|| format!("failed to remove host {}", host.name))
}

/// `h1`…`hN` then `b1`…`bM`, with their names and addresses in subnet `k`.
fn wanted_hosts(state: &State, k: u8, opts: &UpOptions) -> Vec<HostState> {
    let names = (1..=opts.hosts)
        .map(|i| (format!("h{i}"), Role::Host))
        .chain((1..=opts.builders).map(|i| (format!("b{i}"), Role::Builder)));
    names
        .map(|(name, role)| HostState {
            address: netns::host_address(k, &name),
            netns: state.netns_name(&name),
            veth: state.netns_name(&name),
            sshd_pid: None,
            name,
            role,
        })
        .collect()
}

/// The wanted hosts, keeping the sshd pid recorded for hosts that existed before.
fn merge_pids(old: &[HostState], wanted: Vec<HostState>) -> Vec<HostState> {
    wanted
        .into_iter()
        .map(|mut h| {
            if let Some(o) = old
                .iter()
                .find(|o| o.name == h.name && o.address == h.address)
            {
                h.sshd_pid = o.sshd_pid;
            }
            h
        })
        .collect()
}

/// Runs `f` on every item with up to [`WORKERS`] threads; returns the errors.
fn parallel<T: Sync>(
    items: &[T],
    f: impl Fn(&T) -> anyhow::Result<()> + Sync,
) -> Vec<anyhow::Error> {
    let next = AtomicUsize::new(0);
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                if let Err(e) = f(item) {
                    errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                }
            });
        }
    });
    errors.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Checks the counts the user asked for.
fn validate(opts: &UpOptions) -> anyhow::Result<()> {
    if !(1..=MAX_HOSTS).contains(&opts.hosts) {
        bail!(Failure::input(format!(
            "a sandbox has 1 to {MAX_HOSTS} hosts, not {}",
            opts.hosts
        )));
    }
    if opts.builders > MAX_BUILDERS {
        bail!(Failure::input(format!(
            "a sandbox has at most {MAX_BUILDERS} builders, not {}",
            opts.builders
        )));
    }
    Ok(())
}

/// The tools a sandbox needs and the Debian package of each.
const TOOLS: [(&str, &str); 5] = [
    ("ip", "iproute2"),
    ("sshd", "openssh-server"),
    ("ssh-keygen", "openssh-client"),
    ("nix", "nix-bin"),
    ("busybox", "busybox-static"),
];

/// Linux, root, and every tool present — or an error saying what is missing and why.
pub fn preflight() -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") {
        bail!(Failure::input(
            "`nixdeploy sandbox` needs Linux: its hosts are network namespaces with bind mounts"
        ));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(Failure::input(
            "`nixdeploy sandbox` must run as root: it creates network namespaces, a bridge and \
             mounts (try `sudo`)"
        ));
    }
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(tool, _)| match *tool {
            "sshd" => !Path::new(sshd::SSHD).exists(),
            "busybox" => !Path::new(flake::BUSYBOX).exists(),
            _ => find_tool(tool).is_none(),
        })
        .map(|(tool, package)| format!("{tool} (Debian package {package})"))
        .collect();
    if !missing.is_empty() {
        bail!(Failure::input(format!(
            "the sandbox needs tools that are missing: {}; install them with \
             scripts/install-deps.sh",
            missing.join(", ")
        )));
    }
    ensure_mount_points()
}

/// Creates the directories every host's private ones are mounted on, when this machine lacks
/// them: a fresh machine may have no `/nix` (Nix makes it on first use) and no `/etc/nix`.
/// A mount point needs no content, so an empty directory changes nothing else here.
fn ensure_mount_points() -> anyhow::Result<()> {
    for dir in sshd::MOUNT_POINTS {
        let dir = Path::new(dir);
        if !dir.is_dir() {
            fs::create_dir_all(dir).with_context(|| {
                format!(
                    "failed to create {}, the mount point of every sandbox host's own",
                    dir.display()
                )
            })?;
        }
    }
    Ok(())
}

/// Finds a program on `PATH` or in the system directories (root's `PATH` may lack `sbin`).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs a program with arguments (no shell) and returns its stdout; the error names the
/// command and carries its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let exe = find_tool(program).unwrap_or_else(|| PathBuf::from(program));
    let out = Command::new(&exe)
        .args(args)
        .output()
        .with_context(|| format!("failed to run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
