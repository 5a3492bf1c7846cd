//! Where nixdeploy keeps its state on the deploying machine (journal, REPL history, sandboxes).

use std::ffi::{CStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// `$NIXDEPLOY_STATE_DIR` (tests use it to stay isolated), else `$XDG_STATE_HOME/nixdeploy`,
/// else `$HOME/.local/state/nixdeploy`, else the same under the home directory the password
/// database gives this user, else `/tmp/nixdeploy-<uid>` — a directory only this user owns
/// and can enter (checked: never a shared or foreign path).
pub fn state_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(dir) = std::env::var_os("NIXDEPLOY_STATE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_STATE_HOME") {
        return dir.join("nixdeploy");
    }
    if let Some(home) = var("HOME").or_else(passwd_home) {
        return home.join(".local/state/nixdeploy");
    }
    private_tmp_dir(Path::new("/tmp"))
}

/// This user's home directory from the password database (`getpwuid_r`).
fn passwd_home() -> Option<PathBuf> {
    // SAFETY: getuid cannot fail; getpwuid_r writes only into `pwd` and `buf`, whose sizes we
    // pass, and `result` points at `pwd` or is null.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
            return None;
        }
        let dir = CStr::from_ptr(pwd.pw_dir).to_bytes().to_vec();
        let dir = PathBuf::from(OsString::from_vec(dir));
        (dir.is_absolute() && dir != Path::new("/") && dir.is_dir()).then_some(dir)
    }
}

/// Whether `dir` is a real directory (not a link) owned by `uid` that nobody else can enter.
fn is_private(dir: &Path, uid: u32) -> bool {
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.file_type().is_dir() && m.uid() == uid && m.mode() & 0o077 == 0)
}

/// `<tmp>/nixdeploy-<uid>`, created 0700 if missing. If someone else made that name first (or
/// it is a link, or others can enter it), a fresh private directory is used instead, with a
/// warning: the state must never land where another user can read or redirect it.
fn private_tmp_dir(tmp: &Path) -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir = tmp.join(format!("nixdeploy-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    if is_private(&dir, uid) {
        return dir;
    }
    let fresh = fresh_private_dir(tmp, uid);
    eprintln!(
        "warning: {} is not a private directory of uid {uid} (someone else may have made it); \
         keeping this run's state in {} instead. Set XDG_STATE_HOME or HOME to keep state across runs.",
        dir.display(),
        fresh.display()
    );
    fresh
}

/// A new directory `<tmp>/nixdeploy-<uid>.XXXXXX` made by `mkdtemp` (mode 0700, never an
/// existing name).
fn fresh_private_dir(tmp: &Path, uid: u32) -> PathBuf {
    let template = tmp.join(format!("nixdeploy-{uid}.XXXXXX"));
    let mut bytes = template.into_os_string().into_vec();
    bytes.push(0);
    // SAFETY: `bytes` is a NUL-terminated, writable template ending in XXXXXX, as mkdtemp needs.
    let made = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
    bytes.pop();
    if made.is_null() {
        // Nowhere private to write: a path that cannot exist, so writes fail loudly.
        return PathBuf::from("/nonexistent/nixdeploy-state");
    }
    PathBuf::from(OsString::from_vec(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tmp_fallback_is_made_private_to_this_user() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = private_tmp_dir(tmp.path());
        let uid = unsafe { libc::getuid() };
        assert_eq!(dir, tmp.path().join(format!("nixdeploy-{uid}")));
        assert!(is_private(&dir, uid));
        // A second call reuses it.
        assert_eq!(private_tmp_dir(tmp.path()), dir);
    }

    #[test]
    fn a_fallback_name_someone_else_prepared_is_never_used() {
        let tmp = tempfile::tempdir().unwrap();
        let uid = unsafe { libc::getuid() };
        let name = tmp.path().join(format!("nixdeploy-{uid}"));
        // A link planted where the directory would go, pointing somewhere the planter reads.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &name).unwrap();
        let dir = private_tmp_dir(tmp.path());
        assert_ne!(dir, name);
        assert!(!dir.starts_with(&elsewhere));
        assert!(is_private(&dir, uid), "{}", dir.display());
        // A world-readable directory of that name is not used either.
        std::fs::remove_file(&name).unwrap();
        std::fs::create_dir(&name).unwrap();
        std::fs::set_permissions(&name, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert_ne!(private_tmp_dir(tmp.path()), name);
    }

    #[test]
    fn the_password_database_knows_this_users_home() {
        // Whoever runs the tests has an entry (root in CI); it is never `/`.
        if let Some(home) = passwd_home() {
            assert!(home.is_absolute() && home != Path::new("/"));
        }
    }
}
