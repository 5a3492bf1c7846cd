//! The deployment journal.
