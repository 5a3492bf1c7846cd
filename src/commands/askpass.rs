//! `--ask-sudo-password`: reads the sudo password once, from the controlling terminal, without
//! echo, before any host is touched.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use crate::exit::Failure;
use crate::transport::{Secret, SecretBuf};

/// The prompt, written to the terminal (never to stdout or stderr).
const PROMPT: &str = "[nixdeploy] sudo password for the fleet's logins: ";

/// Asks for the password on `/dev/tty`; an input error when there is no terminal.
pub fn ask() -> anyhow::Result<Secret> {
    let mut tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| {
            Failure::input(format!(
                "--ask-sudo-password needs a terminal to ask on, and /dev/tty cannot be opened ({e}); \
                 run nixdeploy from a terminal, or give the login a NOPASSWD sudo rule (see docs/non-root.md)"
            ))
        })?;
    let fd = tty.as_raw_fd();
    // SAFETY: `termios` is plain data; tcgetattr fills it for a valid open fd.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let is_tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if is_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHONL);
        quiet.c_lflag |= libc::ICANON;
        // SAFETY: a valid fd and a termios derived from its own settings.
        unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &quiet) };
    }
    tty.write_all(PROMPT.as_bytes())?;
    tty.flush()?;
    let read = read_line(&mut tty);
    if is_tty {
        // SAFETY: restores the settings read above on the same fd.
        unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &saved) };
    }
    let _ = tty.write_all(b"\n");
    let password = read?;
    if password.expose().is_empty() {
        return Err(Failure::input("--ask-sudo-password: no password was typed").into());
    }
    Ok(password)
}

/// Reads up to the end of the line byte by byte, so nothing after it is consumed. The buffer
/// is reserved up front (no reallocation leaves copies behind) and zeroed when dropped.
fn read_line(input: &mut impl Read) -> anyhow::Result<Secret> {
    let mut bytes = SecretBuf::with_capacity(1024);
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' || byte[0] == b'\r' => break,
            Ok(_) => bytes.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(bytes.into_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_read_without_its_newline_and_nothing_after_it() {
        let mut input: &[u8] = b"s3cret pass\nnext";
        assert_eq!(read_line(&mut input).unwrap().expose(), b"s3cret pass");
        assert_eq!(input, b"next");
    }
}
