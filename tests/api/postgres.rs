//! Shared with the other test binaries and the benchmarks: see `testkit::postgres`.

pub use testkit::postgres::*;
