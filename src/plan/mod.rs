//! Planning: closure diffs.
