//! nixdeploy: deploy NixOS configurations (and other Nix profiles) to fleets of machines,
//! with every deployment written as a Rhai runbook.

pub mod activation;
pub mod cli;
pub mod commands;
pub mod context;
pub mod doctor;
pub mod engine;
pub mod exit;
pub mod fleet;
pub mod journal;
pub mod keys;
pub mod limits;
pub mod nix;
pub mod paths;
pub mod plan;
pub mod repl;
pub mod report;
pub mod sandbox;
pub mod steps;
pub mod transport;
