//! nix.
