//! Dev-only harness for Wharf's end-to-end tests.
//!
//! The tests judge Wharf by what stock clients see, so this crate runs the real `wharf` binary
//! ([`WharfServer`]), the real clients ([`Tool`], [`Podman`], [`Buildah`]) and a reference
//! registry ([`DockerRegistry`]) on loopback, and builds image fixtures locally with no network
//! ([`fixture`]).
//! Everything is blocking `std` code: a test is a script of client invocations, and threads are
//! only used to drain child pipes.
//!
//! Wharf refuses anonymous requests: each [`WharfServer`] creates its administrator with a random
//! password, and every client command a [`Tool`] builds is pointed at an auth file holding it.
//!
//! A missing tool is a test failure, never a skip: [`Tool::find`] panics with an install hint,
//! because a suite that silently skips passes while stock clients fail.

#![warn(missing_docs)]

mod client_auth;
pub mod fixture;
pub mod http;
mod process;
mod registry;
mod server;
mod tool;

pub use process::{run, run_expect_failure, run_with_timeout, CmdOutput};
pub use registry::{DockerRegistry, Registry};
pub use server::WharfServer;
pub use tool::{Buildah, Podman, Tool};
