//! An advisory `flock` on the journal's sibling lock file, held for as long as the value lives.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// A held `flock`; released when dropped (closing the file releases it).
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits for an exclusive lock on `path`, creating the file if needed.
    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        FileLock::acquire(file, libc::LOCK_EX)
    }

    /// Waits for a shared lock on `path`, which must exist.
    pub fn shared(path: &Path) -> io::Result<FileLock> {
        FileLock::acquire(File::open(path)?, libc::LOCK_SH)
    }

    fn acquire(file: File, operation: libc::c_int) -> io::Result<FileLock> {
        loop {
            // SAFETY: the descriptor belongs to `file`, which outlives the call.
            if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}
