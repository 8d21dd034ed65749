//! Shared with the other test binaries and the benchmarks: see `testkit::helpers`.

pub use testkit::helpers::*;
