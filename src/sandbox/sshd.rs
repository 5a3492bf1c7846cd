//! One host's sshd: its directories, keys and config, started inside the host's namespaces.

use std::ffi::CString;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::run;

/// The first of the fixed descriptors the mount sources are opened on before mounting.
const MOUNT_FD_BASE: libc::c_int = 900;

/// The sshd binary every host runs.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Where one host's private directories live on the machine (`DIR/hosts/<name>`).
#[derive(Debug, Clone)]
pub struct HostDirs {
    /// `DIR/hosts/<name>`.
    pub root: PathBuf,
}

impl HostDirs {
    /// The directories of host `name` in sandbox `dir`.
    pub fn new(dir: &Path, name: &str) -> HostDirs {
        HostDirs {
            root: dir.join("hosts").join(name),
        }
    }

    /// Mounted on the host's `/nix`.
    pub fn nix(&self) -> PathBuf {
        self.root.join("nix")
    }

    /// Mounted on the host's `/run`.
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }

    /// Mounted on the host's `/root`.
    pub fn home(&self) -> PathBuf {
        self.root.join("root")
    }

    /// Mounted on the host's `/etc/nix`.
    pub fn etc_nix(&self) -> PathBuf {
        self.root.join("etc/nix")
    }

    /// Mounted on the host's `/etc/ssh` (sshd config, host key, authorized key).
    pub fn etc_ssh(&self) -> PathBuf {
        self.root.join("etc/ssh")
    }

    /// sshd's pid file as seen from the machine.
    pub fn pid_file(&self) -> PathBuf {
        self.run().join("sshd.pid")
    }

    /// sshd's log as seen from the machine.
    pub fn log_file(&self) -> PathBuf {
        self.run().join("sshd.log")
    }

    /// The host's boot id, bind-mounted over `/proc/sys/kernel/random/boot_id` inside the host;
    /// a simulated reboot writes a new one.
    pub fn boot_id(&self) -> PathBuf {
        self.root.join("boot_id")
    }

    /// What survives a reboot of the host besides its store: `/nix/var/nixdeploy-sandbox`
    /// inside (its boot default lives here).
    pub fn persistent(&self) -> PathBuf {
        self.nix().join("var/nixdeploy-sandbox")
    }

    /// The directory first on the `PATH` of every ssh session on the host
    /// (`/nix/var/nixdeploy-sandbox/bin` inside): tests put stand-in commands there.
    pub fn bin(&self) -> PathBuf {
        self.persistent().join("bin")
    }

    /// The host's public host key.
    pub fn host_key_pub(&self) -> PathBuf {
        self.etc_ssh().join("ssh_host_ed25519_key.pub")
    }

    /// `(machine directory, mount point inside the host)`; the mount points are [`MOUNT_POINTS`]; `/run` and `/root` come last so
    /// a sandbox directory below either still resolves (sources are opened before mounting).
    fn mounts(&self) -> [(PathBuf, &'static str); 5] {
        [
            (self.nix(), MOUNT_POINTS[0]),
            (self.etc_nix(), MOUNT_POINTS[1]),
            (self.etc_ssh(), MOUNT_POINTS[2]),
            (self.home(), MOUNT_POINTS[3]),
            (self.run(), MOUNT_POINTS[4]),
        ]
    }
}

/// Where a host's private directories are mounted: they must exist on the machine.
pub const MOUNT_POINTS: [&str; 5] = ["/nix", "/etc/nix", "/etc/ssh", "/root", "/run"];

/// Generates an ed25519 key without passphrase unless `path` already holds one.
pub fn ensure_key(path: &Path, comment: &str) -> anyhow::Result<()> {
    if path.exists() && path.with_extension("pub").exists() {
        return Ok(());
    }
    let _ = fs::remove_file(path);
    let path_str = path.to_str().context("sandbox path is not UTF-8")?;
    run(
        "ssh-keygen",
        &[
            "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path_str,
        ],
    )
    .map(drop)
}

/// The sshd configuration of a host listening on `address`.
pub fn sshd_config(address: &str) -> String {
    format!(
        "# Written by `nixdeploy sandbox up`.\n\
         ListenAddress {address}\n\
         Port 22\n\
         HostKey /etc/ssh/ssh_host_ed25519_key\n\
         PidFile /run/sshd.pid\n\
         AuthorizedKeysFile /etc/ssh/authorized_keys\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         UseDNS no\n\
         PrintMotd no\n\
         MaxStartups 200\n\
         MaxSessions 200\n\
         Subsystem sftp internal-sftp\n\
         SetEnv PATH={HOST_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    )
}

/// [`HostDirs::bin`] as seen inside the host.
pub const HOST_BIN: &str = "/nix/var/nixdeploy-sandbox/bin";

/// Writes a fresh random boot id for the host.
pub fn new_boot_id(dirs: &HostDirs) -> anyhow::Result<()> {
    let id = fs::read_to_string("/proc/sys/kernel/random/uuid")
        .context("failed to read a random uuid from /proc/sys/kernel/random/uuid")?;
    fs::write(dirs.boot_id(), id)
        .with_context(|| format!("failed to write {}", dirs.boot_id().display()))
}

/// The per-host `nix.conf`.
///
/// `build-users-group =`: builds on a host run as root, never as the machine's `nixbld` users.
/// Hosts share this machine's users and processes but each has its own `/nix`, so their Nix
/// would hand out the same build uids from separate pools, and Nix kills every process of a
/// build uid before and after using it: a build on a host killed the deployer's concurrent
/// builds with signal 9 (tests/concurrent_builds.rs pins this).
pub fn nix_conf(builder: bool) -> String {
    let mut text = String::from(
        "# Written by `nixdeploy sandbox up`.\n\
         sandbox = false\n\
         substituters =\n\
         build-users-group =\n\
         experimental-features = nix-command flakes\n",
    );
    if builder {
        text.push_str("extra-platforms = aarch64-linux\n");
    }
    text
}

/// Creates the host's directories and writes its configuration and keys (keeping existing keys).
pub fn prepare(
    dirs: &HostDirs,
    address: &str,
    builder: bool,
    client_pub: &Path,
) -> anyhow::Result<()> {
    for d in [
        dirs.nix(),
        dirs.home(),
        dirs.etc_nix(),
        dirs.etc_ssh(),
        dirs.bin(),
    ] {
        fs::create_dir_all(&d).with_context(|| format!("failed to create {}", d.display()))?;
    }
    if !dirs.boot_id().exists() {
        new_boot_id(dirs)?;
    }
    let privsep = dirs.run().join("sshd");
    fs::create_dir_all(&privsep)
        .with_context(|| format!("failed to create {}", privsep.display()))?;
    fs::set_permissions(&privsep, fs::Permissions::from_mode(0o755))?;
    fs::write(dirs.etc_nix().join("nix.conf"), nix_conf(builder))?;
    fs::write(dirs.etc_ssh().join("sshd_config"), sshd_config(address))?;
    fs::copy(client_pub, dirs.etc_ssh().join("authorized_keys"))
        .with_context(|| format!("failed to copy {}", client_pub.display()))?;
    let name = dirs
        .root
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("host");
    ensure_key(
        &dirs.etc_ssh().join("ssh_host_ed25519_key"),
        &format!("root@{name}"),
    )
}

/// Starts sshd inside namespace `netns` with the host's private mounts and hostname `name`,
/// and waits until it accepts TCP connections on `address:22`; returns its pid.
pub fn start(netns: &str, name: &str, address: &str, dirs: &HostDirs) -> anyhow::Result<u32> {
    start_in(&Path::new("/run/netns").join(netns), name, address, dirs)
}

/// [`start`] with the network namespace given by a file (`/run/netns/<name>`, or
/// `/proc/self/ns/net` when already inside the host).
pub fn start_in(ns: &Path, name: &str, address: &str, dirs: &HostDirs) -> anyhow::Result<u32> {
    let _ = fs::remove_file(dirs.pid_file());
    let ns_file = File::open(ns)
        .with_context(|| format!("failed to open network namespace {}", ns.display()))?;
    // Every source is opened (inside the new mount namespace, where bind sources must live)
    // before anything is mounted, then mounted through /proc/self/fd, so mounting one over a
    // parent of another cannot hide it. The fds get fixed numbers so their paths can be
    // formatted before the fork.
    let mut plan = Vec::new();
    for (i, (src, target)) in dirs.mounts().into_iter().enumerate() {
        let fd = MOUNT_FD_BASE + i as libc::c_int;
        plan.push((
            CString::new(src.as_os_str().as_encoded_bytes())
                .with_context(|| format!("bad path {}", src.display()))?,
            fd,
            CString::new(format!("/proc/self/fd/{fd}"))?,
            CString::new(target)?,
        ));
    }
    let boot_src = CString::new(dirs.boot_id().as_os_str().as_encoded_bytes())
        .with_context(|| format!("bad path {}", dirs.boot_id().display()))?;
    let boot_fd = MOUNT_FD_BASE + plan.len() as libc::c_int;
    let boot_via = CString::new(format!("/proc/self/fd/{boot_fd}"))?;
    let boot_target = CString::new("/proc/sys/kernel/random/boot_id")?;
    let hostname = name.to_owned();
    let ns_fd = ns_file.as_raw_fd();
    let sysfs = CString::new("sysfs")?;
    let sys = CString::new("/sys")?;
    let root = CString::new("/")?;
    let log = File::create(dirs.log_file())
        .with_context(|| format!("failed to create {}", dirs.log_file().display()))?;
    let mut cmd = Command::new(SSHD);
    cmd.args(["-f", "/etc/ssh/sshd_config", "-E", "/run/sshd.log"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone()?);
    // SAFETY: between fork and exec the closure only makes system calls on memory prepared
    // before the fork (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int, step: &[u8]| {
                if rc == 0 {
                    Ok(())
                } else {
                    // Name the failing step in sshd's log (stderr); writing is all we can do here.
                    let e = std::io::Error::last_os_error();
                    let prefix = b"nixdeploy sandbox: failed to set up the host namespace: ";
                    libc::write(2, prefix.as_ptr().cast(), prefix.len());
                    libc::write(2, step.as_ptr().cast(), step.len());
                    libc::write(2, b"\n".as_ptr().cast(), 1);
                    Err(e)
                }
            };
            check(libc::setns(ns_fd, libc::CLONE_NEWNET), b"setns")?;
            check(
                libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS),
                b"unshare",
            )?;
            check(
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ),
                b"make / private",
            )?;
            for (src, fd, _, _) in &plan {
                let opened = libc::open(src.as_ptr(), libc::O_PATH | libc::O_DIRECTORY);
                check(opened.min(0), b"open mount source")?;
                check(
                    libc::dup3(opened, *fd, libc::O_CLOEXEC).min(0),
                    b"number mount source",
                )?;
                libc::close(opened);
            }
            let opened = libc::open(boot_src.as_ptr(), libc::O_PATH);
            check(opened.min(0), b"open boot id")?;
            check(
                libc::dup3(opened, boot_fd, libc::O_CLOEXEC).min(0),
                b"number boot id",
            )?;
            libc::close(opened);
            for (_, _, via, target) in &plan {
                check(
                    libc::mount(
                        via.as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ),
                    b"bind mount",
                )?;
            }
            // The host's own boot id, so a simulated reboot shows as a new boot.
            check(
                libc::mount(
                    boot_via.as_ptr(),
                    boot_target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ),
                b"bind boot id",
            )?;
            check(
                libc::sethostname(hostname.as_ptr().cast(), hostname.len()),
                b"hostname",
            )?;
            // A fresh sysfs shows this namespace's interfaces; harmless if it fails.
            if libc::umount2(sys.as_ptr(), libc::MNT_DETACH) == 0 {
                libc::mount(
                    sysfs.as_ptr(),
                    sys.as_ptr(),
                    sysfs.as_ptr(),
                    0,
                    std::ptr::null(),
                );
            }
            Ok(())
        });
    }
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {SSHD} for {name}"))?;
    if !status.success() {
        bail!(
            "sshd of {name} exited with {status}: {}",
            log_tail(&dirs.log_file())
        );
    }
    wait_ready(name, address, dirs)
}

/// Polls until sshd has written its pid file and accepts a TCP connection.
fn wait_ready(name: &str, address: &str, dirs: &HostDirs) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pid = fs::read_to_string(dirs.pid_file())
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            if tcp_up(address, Duration::from_millis(500)) {
                return Ok(pid);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "sshd of {name} did not answer on {address}:22 within 30 s: {}",
                log_tail(&dirs.log_file())
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether something accepts TCP connections on `address:22`.
pub fn tcp_up(address: &str, timeout: Duration) -> bool {
    match address.parse::<std::net::IpAddr>() {
        Ok(ip) => TcpStream::connect_timeout(&SocketAddr::new(ip, 22), timeout).is_ok(),
        Err(_) => false,
    }
}

/// Whether `pid` is a sandbox sshd running inside namespace `netns` (pids get reused).
pub fn is_our_sshd(pid: u32, netns: &str) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    // The listener retitles itself `sshd: /usr/sbin/sshd -f … [listener] …`.
    let retitled = cmdline
        .strip_prefix(b"sshd: ".as_slice())
        .unwrap_or(&cmdline);
    if !retitled.starts_with(SSHD.as_bytes()) {
        return false;
    }
    let ns = fs::metadata(Path::new("/run/netns").join(netns)).map(|m| m.ino());
    let proc_ns = fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino());
    matches!((ns, proc_ns), (Ok(a), Ok(b)) if a == b)
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        format!("(nothing in {})", path.display())
    } else {
        lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
    }
}
