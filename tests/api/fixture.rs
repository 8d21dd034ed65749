//! Shared with the other test binaries and the benchmarks: see `testkit::fixture`.

pub use testkit::fixture::*;
