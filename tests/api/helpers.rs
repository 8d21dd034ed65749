//! Shared with the other test binaries and the benchmarks: see `testkit::helpers`.

pub use testkit::helpers::*;

/// A pool of `size` connections to the test database at `url`, for driving the store directly.
pub fn pool_on(url: &str, size: usize) -> deadpool_postgres::Pool {
    pimbridge::store::build_pool(&pimbridge::config::DatabaseSettings {
        url: Some(url.into()),
        url_file: None,
        max_connections: size,
        connect_timeout: std::time::Duration::from_secs(2),
        ca_file: None,
    })
    .unwrap()
}
