//! What pimbridge's integration tests and benchmarks share: real Postgres servers
//! ([`postgres`]), the application on port 0 ([`helpers::TestApp`]), the app in front of AWS
//! SCIM emulators ([`fixture`]), a client for the Graph emulator ([`graph`]) and signed event
//! posting ([`signing`]).

// Test support fails loudly: a panic during set-up is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fixture;
pub mod graph;
pub mod helpers;
pub mod postgres;
pub mod signing;
