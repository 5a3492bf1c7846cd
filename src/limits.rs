//! Process limits: the open-file limit raised as far as allowed, and a clear error when a fleet
//! still cannot fit in it.

/// File descriptors a host can hold for the whole run (a deploy lock's session: three pipes and
/// a mux socket).
const FDS_PER_HOST: u64 = 4;
/// File descriptors one in-flight host operation can hold (its ssh mux client, pipes, Nix).
const FDS_PER_WORKER: u64 = 12;
/// Everything else the process keeps open.
const FDS_BASE: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the default soft limit, 1024, is what a
/// few hundred hosts run into). Failure to raise is not an error: the fit check says what to do.
pub fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The soft open-file limit now in force.
pub fn open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        u64::MAX
    }
}

/// How many descriptors a run over `hosts` hosts, `parallel` at a time, may need.
pub fn open_files_needed(hosts: usize, parallel: usize) -> u64 {
    FDS_BASE + hosts as u64 * FDS_PER_HOST + parallel.min(hosts) as u64 * FDS_PER_WORKER
}

/// An input error, before any host is touched, when the fleet cannot fit in the limit.
pub fn check_fleet_fits(hosts: usize, parallel: usize) -> Result<(), crate::exit::Failure> {
    let needed = open_files_needed(hosts, parallel);
    let limit = open_files_limit();
    if needed > limit {
        return Err(crate::exit::Failure::input(format!(
            "{hosts} hosts at --parallel {parallel} need about {needed} open files, but this \
             process may open only {limit}; raise the hard limit (`ulimit -Hn`, LimitNOFILE= in \
             a systemd unit) or lower --parallel"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_grows_with_hosts_and_workers() {
        assert_eq!(open_files_needed(0, 10), 64);
        assert_eq!(open_files_needed(256, 256), 64 + 256 * 4 + 256 * 12);
        // Past the usual soft limit of 1024: why the limit is raised at start.
        assert!(open_files_needed(256, 10) > 1024);
    }
}
