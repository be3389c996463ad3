//! The `vigil` binary's command line and settings, as a library so that
//! `vigil-bench` (crates/bench) reads the same config file and flags.
//! The roles themselves live in their crates; `main.rs` wires them.

pub mod cli;
pub mod config;
