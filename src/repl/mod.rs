//! repl.
