//! Logging: JSON lines in production, readable lines in a terminal, filtered by `RUST_LOG` or
//! `log.level`. Spans carry event, job and application ids so every line about an event names it.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber; later calls (as in tests) are ignored.
pub fn init(settings: &LogSettings) {
    // tokio_postgres logs server NOTICEs at info; they are noise for operators.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{},tokio_postgres=warn", settings.level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// An error and its sources, outermost first, for logs. A Postgres error is rendered with what
/// the server said (its own `Display` is a bare "db error"), and its sources are not repeated.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        if !text.is_empty() {
            text.push_str(": ");
        }
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            text.push_str(&postgres_error(pg));
            break;
        }
        if let Some(db) = cause.downcast_ref::<tokio_postgres::error::DbError>() {
            text.push_str(&db_error(db));
            break;
        }
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// A client error with the server's severity, SQLSTATE code, message, detail, hint and the
/// object it names; other client errors (I/O, timeouts) with their causes.
pub fn postgres_error(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return db_error(db);
    }
    let mut text = error.to_string();
    let mut next = std::error::Error::source(error);
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

fn db_error(db: &tokio_postgres::error::DbError) -> String {
    let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    let parts = [
        ("detail", db.detail()),
        ("hint", db.hint()),
        ("table", db.table()),
        ("constraint", db.constraint()),
    ];
    for (name, value) in parts {
        if let Some(value) = value {
            text.push_str(&format!("; {name}: {value}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_lists_every_source() {
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&error), "outer: inner");
    }
}
