//! activation.
