//! Integration tests: the real application over HTTP against a real Postgres.
//! One binary for all of them, to link once.
// Test support code may panic: a failed set-up is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
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
mod intake;
mod limit;
mod model;
mod postgres;
mod quarantine;
mod shutdown;
mod tls;
