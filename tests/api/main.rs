//! Integration tests of the pimbridge crate: the real application over HTTP against a real
//! Postgres, and its SCIM and Graph clients against the project's emulators. One binary for
//! all of them, to link once.
// Test support code may panic: a failed set-up is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod admin_guard;
mod architecture;
mod audit;
mod auth;
mod backlog;
mod budget;
mod config_cli;
mod cycles;
mod dispatch;
mod durability;
mod eventgrid;
mod fixture;
mod graph;
mod graph_client;
mod graph_credentials;
mod graph_removals;
mod handoff;
mod health;
mod helpers;
mod hostile_input;
mod intake;
mod limit;
mod listeners;
mod membership;
mod metrics_catalogue;
mod model;
mod observability;
mod openapi;
mod pacing;
mod plans;
mod postgres;
mod quarantine;
mod recovery;
mod removal_threshold;
mod retention;
mod scim_client;
mod secret_reload;
mod secrets;
mod shutdown;
mod startup;
mod tls;
mod user_attributes;
