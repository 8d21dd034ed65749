//! pimbridge: Microsoft Entra PIM-for-Groups activations to AWS IAM Identity Center, in milliseconds.
//!
//! Module map: `routes` (HTTP) → `auth` + `intake` (validate, authenticate, store with
//! `admission`) → `store` (Postgres) → `dispatch` (immediate lane; the intake also hands it the
//! jobs it claims, through `handoff`) and `sync` (cycles: deferred lane, deactivations, expiry) →
//! `scim` (AWS). The workspace's `aws-scim-emulator` crate stands in for AWS. `config` is validated once; `metrics` and `telemetry` observe.
#![forbid(unsafe_code)]

pub mod admission;
pub mod auth;
pub mod backoff;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod duration;
pub mod error;
pub mod graph;
pub mod handoff;
pub mod intake;
pub mod metrics;
pub mod outbound;
pub mod provision;
pub mod proxy;
pub mod reload;
pub mod replica;
pub mod resolve;
pub mod retention;
pub mod routes;
pub mod scim;
pub mod secret;
pub mod startup;
pub mod state;
pub mod store;
pub mod sync;
pub mod telemetry;
