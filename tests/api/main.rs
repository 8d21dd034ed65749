//! Integration tests: the real application over HTTP against a real Postgres.
//! One binary for all of them, to link once.
// Test support code may panic: a failed set-up is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod admin_guard;
mod audit;
mod auth;
mod config_cli;
mod cycles;
mod dispatch;
mod eventgrid;
mod fixture;
mod graph;
mod health;
mod helpers;
mod hostile_input;
mod intake;
mod limit;
mod postgres;
mod quarantine;
mod secrets;
mod shutdown;
mod tls;
