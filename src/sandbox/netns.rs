//! Network plumbing: the sandbox bridge and its subnet, one namespace and veth pair per host.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::run;
use super::state::{Lock, State};

/// The machine-wide lock that serialises subnet allocation between concurrent `up`s.
const GLOBAL_LOCK: &str = "/run/nixdeploy-sandbox.lock";

/// The first two octets of every sandbox subnet.
const PREFIX: &str = "10.77";

/// The first two octets of a sandbox's second subnet, `10.78.K.0/24`, for hosts past
/// [`FIRST_BANK`] (same `K`, so it is free whenever `10.77.K.0/24` is).
const SECOND_PREFIX: &str = "10.78";

/// Hosts `h1`…`h189` live at `10.77.K.11`–`.199` (builders at `.201`–`.208`); later ones at
/// `10.78.K.11` onwards.
pub const FIRST_BANK: u32 = 189;

/// Holds the machine-wide sandbox lock.
pub fn global_lock() -> anyhow::Result<Lock> {
    Lock::acquire(Path::new(GLOBAL_LOCK))
}

/// The address of host `name` (`h1` → `10.77.K.11`, `b1` → `10.77.K.201`, `h190` →
/// `10.78.K.11`) in subnet `k`.
pub fn host_address(k: u8, name: &str) -> String {
    let (kind, n) = name.split_at(1);
    let n: u32 = n.parse().unwrap_or(0);
    match kind {
        "b" => format!("{PREFIX}.{k}.{}", 200 + n),
        _ if n > FIRST_BANK => format!("{SECOND_PREFIX}.{k}.{}", 10 + n - FIRST_BANK),
        _ => format!("{PREFIX}.{k}.{}", 10 + n),
    }
}

/// Whether a network interface of that name exists in the machine's namespace.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Whether a named network namespace exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Makes sure the sandbox bridge exists with an address in its own `10.77.K.0/24` (and
/// `10.78.K.0/24` for hosts past the first bank), allocating `K` under the machine-wide lock,
/// and returns `K`.
pub fn ensure_bridge(state: &State) -> anyhow::Result<u8> {
    let _lock = global_lock()?;
    if link_exists(&state.bridge) {
        if let Some(k) = subnets_of(Some(&state.bridge))?.into_iter().next() {
            run("ip", &["link", "set", &state.bridge, "up"])?;
            ensure_second_bank(&state.bridge, k)?;
            return Ok(k);
        }
    } else {
        run("ip", &["link", "add", &state.bridge, "type", "bridge"])?;
    }
    let used = subnets_of(None)?;
    let k = state
        .subnet
        .filter(|k| !used.contains(k))
        .or_else(|| (1..=254).find(|k| !used.contains(k)))
        .context("no free 10.77.K.0/24 subnet left for another sandbox")?;
    let cidr = format!("{PREFIX}.{k}.1/24");
    run("ip", &["addr", "add", &cidr, "dev", &state.bridge])?;
    ensure_second_bank(&state.bridge, k)?;
    run("ip", &["link", "set", &state.bridge, "up"])?;
    Ok(k)
}

/// The bridge's address in the second bank, `10.78.K.1/24`.
fn ensure_second_bank(bridge: &str, k: u8) -> anyhow::Result<()> {
    let cidr = format!("{SECOND_PREFIX}.{k}.1/24");
    let addrs = run("ip", &["-4", "-o", "addr", "show", "dev", bridge])?;
    if !addrs.contains(&format!("inet {cidr}")) {
        run("ip", &["addr", "add", &cidr, "dev", bridge])?;
    }
    Ok(())
}

/// The `K`s of every `10.77.K.x` address on the machine (or on one device).
fn subnets_of(dev: Option<&str>) -> anyhow::Result<BTreeSet<u8>> {
    let mut args = vec!["-4", "-o", "addr", "show"];
    if let Some(dev) = dev {
        args.extend(["dev", dev]);
    }
    let out = run("ip", &args)?;
    Ok(parse_subnets(&out))
}

/// Picks `K` out of every `inet 10.77.K.x/…` (or `10.78.K.x`, the second bank) in `ip -o addr`
/// output.
fn parse_subnets(text: &str) -> BTreeSet<u8> {
    let mut words = text.split_whitespace().peekable();
    let mut found = BTreeSet::new();
    while let Some(word) = words.next() {
        if word != "inet" {
            continue;
        }
        let Some(addr) = words.peek() else { break };
        let mut octets = addr.split(['.', '/']);
        if octets.next() == Some("10") && matches!(octets.next(), Some("77" | "78")) {
            if let Some(k) = octets.next().and_then(|k| k.parse().ok()) {
                found.insert(k);
            }
        }
    }
    found
}

/// Creates host's namespace and veth pair (whatever is missing) and configures `eth0` inside.
pub fn ensure_host_net(netns: &str, veth: &str, bridge: &str, address: &str) -> anyhow::Result<()> {
    if !netns_exists(netns) {
        netns_add(netns)?;
    }
    if !link_exists(veth) {
        run(
            "ip",
            &[
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns,
            ],
        )?;
    }
    run("ip", &["link", "set", veth, "master", bridge, "up"])?;
    let cidr = format!("{address}/24");
    let addrs = run(
        "ip",
        &["-n", netns, "-4", "-o", "addr", "show", "dev", "eth0"],
    )?;
    if !addrs.contains(&format!("inet {cidr}")) {
        run("ip", &["-n", netns, "addr", "add", &cidr, "dev", "eth0"])?;
    }
    run("ip", &["-n", netns, "link", "set", "eth0", "up"])?;
    run("ip", &["-n", netns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// `ip netns add`; the very first one on a machine turns `/run/netns` into a shared mount,
/// which races between concurrent `ip` processes, so that one runs under the global lock.
fn netns_add(netns: &str) -> anyhow::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prepared = mountinfo
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some("/run/netns"));
    let _lock = if prepared { None } else { Some(global_lock()?) };
    run("ip", &["netns", "add", netns]).map(drop)
}

/// The pids of every process inside a named namespace.
pub fn netns_pids(netns: &str) -> Vec<u32> {
    if !netns_exists(netns) {
        return Vec::new();
    }
    run("ip", &["netns", "pids", netns])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a process is still alive (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Sends SIGTERM, waits for the processes to go, then SIGKILLs whatever is left.
pub fn terminate(pids: &[u32]) {
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            return;
        }
        for pid in &left {
            // SAFETY: kill(2) with a pid we checked belongs to our sandbox.
            unsafe { libc::kill(*pid as libc::pid_t, signal) };
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while left.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Removes host's namespace (killing what is left inside it) and its veth; the veth goes
/// first because deleting only the namespace removes the pair asynchronously.
pub fn delete_host_net(netns: &str, veth: &str) -> anyhow::Result<()> {
    terminate(&netns_pids(netns));
    if link_exists(veth) {
        if let Err(e) = run("ip", &["link", "del", veth]) {
            if link_exists(veth) {
                return Err(e);
            }
        }
    }
    if netns_exists(netns) {
        run("ip", &["netns", "del", netns])?;
    }
    Ok(())
}

/// Removes the sandbox bridge.
pub fn delete_bridge(bridge: &str) -> anyhow::Result<()> {
    if link_exists(bridge) {
        run("ip", &["link", "del", bridge])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_put_targets_and_builders_apart() {
        assert_eq!(host_address(5, "h1"), "10.77.5.11");
        assert_eq!(host_address(5, "h64"), "10.77.5.74");
        assert_eq!(host_address(5, "b2"), "10.77.5.202");
        assert_eq!(host_address(5, "h189"), "10.77.5.199");
        assert_eq!(host_address(5, "h190"), "10.78.5.11");
        assert_eq!(host_address(5, "h256"), "10.78.5.77");
    }

    #[test]
    fn subnets_are_read_from_ip_addr_output() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\n\
                   7: ndabc-br    inet 10.77.3.1/24 scope global ndabc-br\n\
                   8: other    inet 10.78.4.1/24 scope global other\n";
        assert_eq!(parse_subnets(out), BTreeSet::from([3, 4]));
    }
}
