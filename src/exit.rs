//! Named exit codes and the error type that carries one, so every command ends the same way.

use std::fmt;

/// The documented exit codes of `nixdeploy` (see `docs/exit-codes.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything the command touched ended well.
    Success = 0,
    /// At least one host failed, was rolled back, or a runbook step failed unhandled.
    HostsFailed = 1,
    /// The command line was malformed (clap's own code).
    Usage = 2,
    /// The runbook did not compile or raised an error.
    Runbook = 3,
    /// The inventory, flake, selector or another input could not be used.
    Input = 4,
    /// An operator gate was declined or could not be asked (no terminal, no `--yes`).
    Declined = 5,
    /// The run was interrupted (Ctrl-C) before it finished.
    Interrupted = 130,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An error that has already been rendered for the user and says how the process should end.
#[derive(Debug)]
pub struct Failure {
    /// How the process ends.
    pub exit: Exit,
    /// The complete, rendered message (may span several lines).
    pub message: String,
}

impl Failure {
    /// A failure with the given exit code and message.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }

    /// A bad input (inventory, selector, flag value): exit code [`Exit::Input`].
    pub fn input(message: impl Into<String>) -> Self {
        Failure::new(Exit::Input, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code for any error: a [`Failure`] anywhere in the chain decides, otherwise
/// the error is treated as a bad input.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map(|f| f.exit)
        .unwrap_or(Exit::Input)
}
