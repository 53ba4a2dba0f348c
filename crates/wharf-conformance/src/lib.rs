//! An independent conformance suite for the OCI distribution-spec v1.1, written from the spec
//! text and run against any registry URL.
//!
//! The binary (`main.rs`) parses the command line and builds a [`context::Ctx`]; the
//! [`runner`] executes the catalogue from [`checks::all`] one check at a time and prints
//! `PASS`/`FAIL` lines. Checks build their content with [`content`] and [`fixtures`], talk
//! through [`client`], and judge responses with [`assert`]; [`outcome`] defines what a check
//! can conclude, including the optional features a registry may lack.

#![warn(missing_docs)]

pub mod assert;
pub mod checks;
pub mod client;
pub mod content;
pub mod context;
pub mod fixtures;
pub mod outcome;
pub mod runner;
