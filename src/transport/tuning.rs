//! Fast ssh algorithms where they cost nothing in safety: what `ssh -G` says the client would
//! negotiate with a host decides whether nixdeploy puts a cheaper choice first. An explicit
//! choice of the user (ssh config or `sshOptions`) is never overridden.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};

use super::Target;

/// Puts `curve25519-sha256` at the head of the client's default key exchanges (OpenSSH ≥ 8.2).
const FAST_KEX: &str = "KexAlgorithms=^curve25519-sha256,curve25519-sha256@libssh.org";

/// Puts AES-GCM at the head of the client's default ciphers (OpenSSH ≥ 8.2).
const FAST_CIPHERS: &str = "Ciphers=^aes256-gcm@openssh.com,aes128-gcm@openssh.com";

/// What to put first for one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tuning {
    /// For connections that carry no secret (confirmations): the client would negotiate the
    /// hybrid post-quantum `sntrup761x25519`, whose key generation costs ~90 ms of CPU on every
    /// connection. The multiplexed connection, which carries keys, keeps it.
    pub classic_kex_for_tokens: bool,
    /// For the multiplexed connection that carries the closures: the client would use its
    /// default `chacha20-poly1305` while both ends have AES instructions, with which AES-256-GCM
    /// (as strong) encrypts at about twice the speed for half the CPU.
    pub aes_gcm: bool,
}

impl Tuning {
    /// The `-o` options for the multiplexed connection.
    pub fn master_options(&self) -> Vec<String> {
        if self.aes_gcm {
            vec!["-o".into(), FAST_CIPHERS.into()]
        } else {
            Vec::new()
        }
    }

    /// The `-o` options for a brand-new confirmation connection.
    pub fn token_options(&self) -> Vec<String> {
        if self.classic_kex_for_tokens {
            vec!["-o".into(), FAST_KEX.into()]
        } else {
            Vec::new()
        }
    }

    /// Decides from `ssh -G` output, given whether both ends have AES instructions.
    pub fn from_resolved(resolved: &str, aes_on_both_ends: bool) -> Tuning {
        let value = |key: &str| {
            resolved
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
                .unwrap_or("")
        };
        Tuning {
            classic_kex_for_tokens: value("kexalgorithms").starts_with("sntrup761x25519"),
            // OpenSSH's own default order; a list the user wrote looks different.
            aes_gcm: aes_on_both_ends
                && value("ciphers").starts_with("chacha20-poly1305@openssh.com,aes128-ctr,"),
        }
    }

    /// The tuning for `target`, asked of `ssh -G` once per host and run.
    pub async fn of(target: &Target) -> Tuning {
        Resolved::of(target).await.tuning
    }
}

/// What `ssh -G` says about one host, asked once per host and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The fast choices to put first.
    pub tuning: Tuning,
    /// The sshd a handshake with the host meets first — the first `ProxyJump` hop, the
    /// `ProxyCommand`, or the host itself — whose `MaxStartups` bounds how many handshakes
    /// may be in flight through it at once.
    pub front_door: String,
}

impl Resolved {
    /// The resolution of `target`'s ssh configuration.
    pub async fn of(target: &Target) -> Resolved {
        static CACHE: OnceLock<Mutex<HashMap<Vec<String>, Resolved>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut key = target.common_args();
        key.push(target.destination.clone());
        if let Some(r) = cache.lock().unwrap().get(&key) {
            return r.clone();
        }
        let out = tokio::process::Command::new("ssh")
            .arg("-G")
            .args(target.common_args())
            .arg("--")
            .arg(&target.destination)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .await;
        let aes = deployer_has_aes() && system_has_aes(&target.system);
        let resolved = match out {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                Resolved {
                    tuning: Tuning::from_resolved(&text, aes),
                    front_door: front_door(&text),
                }
            }
            // Unknown: counted with every other host that could not be resolved.
            _ => Resolved {
                tuning: Tuning::default(),
                front_door: "unresolved".into(),
            },
        };
        cache.lock().unwrap().insert(key, resolved.clone());
        resolved
    }
}

/// The first sshd a connection's handshake reaches, from `ssh -G` output: hosts behind the
/// same bastion share it; hosts reached directly each have their own.
fn front_door(resolved: &str) -> String {
    let value = |key: &str| {
        resolved
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .filter(|v| !v.is_empty() && *v != "none")
    };
    if let Some(jump) = value("proxyjump") {
        return format!("jump {}", jump.split(',').next().unwrap_or(jump));
    }
    if let Some(command) = value("proxycommand") {
        return format!("command {command}");
    }
    format!(
        "direct {}:{}",
        value("hostname").unwrap_or(""),
        value("port").unwrap_or("22")
    )
}

/// Whether this machine's CPU has AES instructions (AES-NI, or the ARMv8 crypto extension).
fn deployer_has_aes() -> bool {
    static AES: OnceLock<bool> = OnceLock::new();
    *AES.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo")
            .map(|info| cpuinfo_has_aes(&info))
            .unwrap_or(false)
    })
}

fn cpuinfo_has_aes(info: &str) -> bool {
    info.lines()
        .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
        .any(|l| l.split_whitespace().any(|f| f == "aes"))
}

/// Whether every machine of a Nix system has AES instructions: x86-64 servers have had AES-NI
/// since 2010; ARM boards such as the Raspberry Pi 4 lack the crypto extension, so they keep
/// ChaCha20, which is faster without it.
fn system_has_aes(system: &str) -> bool {
    system.starts_with("x86_64-")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENSSH_9_2: &str = "user root\n\
        ciphers chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com\n\
        kexalgorithms sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,curve25519-sha256\n";

    #[test]
    fn openssh_defaults_get_the_fast_choices_first() {
        let t = Tuning::from_resolved(OPENSSH_9_2, true);
        assert_eq!(
            t,
            Tuning {
                classic_kex_for_tokens: true,
                aes_gcm: true
            }
        );
        assert_eq!(t.master_options(), ["-o", FAST_CIPHERS]);
        assert_eq!(t.token_options(), ["-o", FAST_KEX]);
    }

    #[test]
    fn a_users_own_choice_is_kept() {
        let own = "ciphers chacha20-poly1305@openssh.com\nkexalgorithms curve25519-sha256\n";
        assert_eq!(Tuning::from_resolved(own, true), Tuning::default());
        let ml_kem = "kexalgorithms mlkem768x25519-sha256,sntrup761x25519-sha512\n";
        assert!(!Tuning::from_resolved(ml_kem, true).classic_kex_for_tokens);
        assert!(Tuning::default().master_options().is_empty());
    }

    #[test]
    fn hosts_behind_one_bastion_share_its_front_door_and_direct_hosts_have_their_own() {
        let direct = |host: &str| format!("hostname {host}\nport 22\nproxycommand none\n");
        assert_eq!(front_door(&direct("10.0.0.1")), "direct 10.0.0.1:22");
        assert_ne!(
            front_door(&direct("10.0.0.1")),
            front_door(&direct("10.0.0.2"))
        );
        let behind =
            |host: &str| format!("hostname {host}\nport 22\nproxyjump admin@bastion:2222,inner\n");
        assert_eq!(front_door(&behind("10.0.0.1")), "jump admin@bastion:2222");
        assert_eq!(
            front_door(&behind("10.0.0.1")),
            front_door(&behind("10.0.0.2"))
        );
        let command = "hostname a\nproxycommand ssh -W %h:%p gw\n";
        assert_eq!(front_door(command), "command ssh -W %h:%p gw");
    }

    #[test]
    fn aes_gcm_needs_aes_instructions_on_both_ends() {
        assert!(!Tuning::from_resolved(OPENSSH_9_2, false).aes_gcm);
        assert!(cpuinfo_has_aes("flags\t\t: fpu sse2 aes avx2\n"));
        assert!(cpuinfo_has_aes("Features\t: fp asimd aes pmull sha1\n"));
        assert!(!cpuinfo_has_aes("Features\t: fp asimd evtstrm crc32\n"));
        assert!(system_has_aes("x86_64-linux"));
        assert!(!system_has_aes("aarch64-linux"));
    }
}
