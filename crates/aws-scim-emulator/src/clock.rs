//! Time formats used by AWS and by the request log.

use time::macros::format_description;
use time::OffsetDateTime;

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// `meta.created` / `meta.lastModified`: ISO-8601 UTC, second precision, `Z`.
pub(crate) fn meta_timestamp(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// Error `timeStamp`: `YYYY-MM-DD HH:MM:SS.mmm` (space, no zone).
pub(crate) fn error_timestamp(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
    ))
    .unwrap_or_default()
}

/// Request-log `at`: RFC 3339 UTC with milliseconds.
pub(crate) fn log_timestamp(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_match_the_aws_shapes() {
        let at = datetime!(2022-03-18 10:57:08.014 UTC);
        assert_eq!(meta_timestamp(at), "2022-03-18T10:57:08Z");
        assert_eq!(error_timestamp(at), "2022-03-18 10:57:08.014");
        assert_eq!(log_timestamp(at), "2022-03-18T10:57:08.014Z");
    }
}
