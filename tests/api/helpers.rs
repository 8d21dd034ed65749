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

/// A new activation `id` of user `{id}-user` in GROUP_A, from now for an hour, with the user's
/// and the group's attributes.
pub fn activation_of(id: &str) -> pimbridge::domain::NewEvent {
    let now = time::OffsetDateTime::now_utc();
    pimbridge::domain::NewEvent {
        id: id.to_owned(),
        kind: pimbridge::domain::EventKind::Activation,
        occurred_at: now,
        group_id: GROUP_A.to_owned(),
        principal_id: format!("{id}-user"),
        ends_at: Some(now + std::time::Duration::from_secs(3600)),
        grant_id: None,
        user: Some(
            serde_json::json!({"userName": format!("{id}@contoso.com"), "givenName": "Alice",
                               "familyName": "Liddell", "displayName": "Alice Liddell",
                               "email": format!("{id}@contoso.com")}),
        ),
        group: Some(serde_json::json!({"displayName": crate::fixture::AWS_GROUP})),
    }
}

/// Migrates the database behind `pool` and registers the test applications.
pub async fn migrate_with_applications(pool: &deadpool_postgres::Pool) {
    let mut db = pool.get().await.unwrap();
    pimbridge::store::migrate::run(&mut db).await.unwrap();
    pimbridge::store::register_applications(&db, &["alpha".to_owned(), "beta".to_owned()])
        .await
        .unwrap();
}

/// A plain connection to `url`, beside the pool (to look at or change what the service stored).
pub async fn admin_on(url: &str) -> tokio_postgres::Client {
    let (admin, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
}
