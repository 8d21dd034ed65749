//! The bounds every stored event must satisfy, whatever route or parser it came from.
//!
//! Parsers name the field as the sender wrote it and call [`timestamp`] and [`text`] while they
//! read; [`events`] runs once more on every event just before it is stored (our JSON events,
//! audit records, Event Grid deliveries and events resolved from Microsoft Graph alike), so that no
//! value Postgres cannot take, or that would panic on its way there, reaches the database.
//!
//! The rules (docs/security.md):
//! - timestamps are normalised to UTC and lie in [`EARLIEST`, `LATEST`); an `occurredAt` may be
//!   at most the configured clock skew (`intake.max_clock_skew`, 5 minutes by default) ahead of now;
//! - strings hold no NUL character (Postgres refuses it in `text` and `jsonb`).

use std::time::Duration;

use serde_json::Value;
use time::macros::datetime;
use time::{OffsetDateTime, UtcOffset};

use super::event::{EventError, NewEvent};

/// The earliest accepted timestamp: nothing pimbridge handles happened before PIM existed.
pub const EARLIEST: OffsetDateTime = datetime!(2000-01-01 0:00 UTC);
/// The first timestamp no longer accepted (far beyond any real activation's end).
pub const LATEST: OffsetDateTime = datetime!(2100-01-01 0:00 UTC);
/// The default for `intake.max_clock_skew`.
pub use crate::config::DEFAULT_MAX_CLOCK_SKEW;

/// What a timestamp stands for, which decides its upper bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// When something happened: no later than now plus the allowed clock skew.
    Occurred,
    /// When something ends: only the documented range applies.
    Ends,
}

/// The bounds in force for one request.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The server's clock when the request is checked.
    pub now: OffsetDateTime,
    /// How far ahead of `now` an `occurredAt` may be.
    pub max_clock_skew: Duration,
}

impl Bounds {
    /// Bounds as of now.
    pub fn now(max_clock_skew: Duration) -> Self {
        Self {
            now: OffsetDateTime::now_utc(),
            max_clock_skew,
        }
    }
}

impl Default for Bounds {
    fn default() -> Self {
        Self::now(DEFAULT_MAX_CLOCK_SKEW)
    }
}

fn invalid(field: &str, code: &'static str, reason: String) -> EventError {
    EventError::InvalidField {
        field: field.to_owned(),
        code,
        reason,
    }
}

/// `at` in UTC, if it lies within the documented range; `field` names it in the error
/// (`invalid_timestamp`).
pub fn in_range(field: &str, at: OffsetDateTime) -> Result<OffsetDateTime, EventError> {
    // `to_offset` panics when the UTC date leaves the year range (9999-12-31T23:30:00-01:00):
    // the checked form turns that into an error.
    at.checked_to_offset(UtcOffset::UTC)
        .filter(|utc| *utc >= EARLIEST && *utc < LATEST)
        .ok_or_else(|| {
            invalid(
                field,
                "invalid_timestamp",
                "must lie between 2000-01-01T00:00:00Z and 2099-12-31T23:59:59Z".to_owned(),
            )
        })
}

/// [`in_range`], and for [`Moment::Occurred`] no further ahead of now than the allowed skew.
pub fn timestamp(
    field: &str,
    at: OffsetDateTime,
    moment: Moment,
    bounds: &Bounds,
) -> Result<OffsetDateTime, EventError> {
    let utc = in_range(field, at)?;
    if moment == Moment::Occurred {
        let skew = time::Duration::try_from(bounds.max_clock_skew).unwrap_or(time::Duration::MAX);
        let limit = bounds.now.checked_add(skew).unwrap_or(LATEST);
        if utc > limit {
            return Err(invalid(
                field,
                "invalid_timestamp",
                format!(
                    "is in the future: more than {} ahead of the server's clock (intake.max_clock_skew)",
                    crate::duration::format(bounds.max_clock_skew)
                ),
            ));
        }
    }
    Ok(utc)
}

/// Refuses a string Postgres cannot store (a NUL character), naming `field` (`invalid_character`).
pub fn text(field: &str, value: &str) -> Result<(), EventError> {
    if value.contains('\0') {
        return Err(invalid(
            field,
            "invalid_character",
            "contains a NUL character (\\u0000), which cannot be stored".to_owned(),
        ));
    }
    Ok(())
}

/// Refuses any string (or member name) in `value` that [`text`] refuses; `field` names `value`.
pub fn json(field: &str, value: &Value) -> Result<(), EventError> {
    match value {
        Value::String(s) => text(field, s),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| json(&format!("{field}[{i}]"), item)),
        Value::Object(members) => members.iter().try_for_each(|(key, item)| {
            let name = format!("{field}.{key}");
            text(&name, key)?;
            json(&name, item)
        }),
        _ => Ok(()),
    }
}

/// Checks every event of a request against the bounds and returns them with UTC timestamps.
/// Fields are named after our event's (`[2].occurredAt`, with the element's position among the
/// request's events when there are several).
pub fn events(events: &[NewEvent], bounds: &Bounds) -> Result<Vec<NewEvent>, EventError> {
    let many = events.len() > 1;
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let prefix = if many {
                format!("[{i}].")
            } else {
                String::new()
            };
            event_in(event, &prefix, bounds)
        })
        .collect()
}

/// One event, fields prefixed by `prefix`.
pub fn event_in(event: &NewEvent, prefix: &str, bounds: &Bounds) -> Result<NewEvent, EventError> {
    let name = |field: &str| format!("{prefix}{field}");
    text(&name("id"), &event.id)?;
    text(&name("groupId"), &event.group_id)?;
    text(&name("principalId"), &event.principal_id)?;
    if let Some(grant) = &event.grant_id {
        text(&name("grantId"), grant)?;
    }
    if let Some(user) = &event.user {
        json(&name("user"), user)?;
    }
    if let Some(group) = &event.group {
        json(&name("group"), group)?;
    }
    let occurred_at = timestamp(
        &name("occurredAt"),
        event.occurred_at,
        Moment::Occurred,
        bounds,
    )?;
    let ends_at = event
        .ends_at
        .map(|at| timestamp(&name("endsAt"), at, Moment::Ends, bounds))
        .transpose()?;
    Ok(NewEvent {
        occurred_at,
        ends_at,
        ..event.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventKind;
    use time::macros::datetime;

    fn bounds() -> Bounds {
        Bounds {
            now: datetime!(2026-12-02 12:00 UTC),
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
        }
    }

    fn event() -> NewEvent {
        NewEvent {
            id: "e".into(),
            kind: EventKind::Activation,
            occurred_at: datetime!(2026-12-02 11:00 +01:00),
            group_id: "g".into(),
            principal_id: "p".into(),
            ends_at: Some(datetime!(2026-12-02 19:00 +01:00)),
            grant_id: None,
            user: Some(serde_json::json!({"userName": "a@b"})),
            group: None,
        }
    }

    #[test]
    fn timestamps_are_normalised_to_utc() {
        let checked = events(&[event()], &bounds()).unwrap();
        assert_eq!(checked[0].occurred_at.offset(), UtcOffset::UTC);
        assert_eq!(checked[0].occurred_at, datetime!(2026-12-02 10:00 UTC));
        assert_eq!(checked[0].ends_at.unwrap().offset(), UtcOffset::UTC);
    }

    #[test]
    fn a_date_whose_utc_form_leaves_the_year_range_is_refused_not_panicking() {
        let far = datetime!(9999-12-31 23:30 -01:00);
        for moment in [Moment::Occurred, Moment::Ends] {
            let error = timestamp("endsAt", far, moment, &bounds()).unwrap_err();
            assert_eq!(error.code(), "invalid_timestamp");
            assert!(error.to_string().starts_with("endsAt"), "{error}");
        }
    }

    #[test]
    fn the_range_and_the_skew_are_enforced() {
        let b = bounds();
        let ok = |at| timestamp("occurredAt", at, Moment::Occurred, &b).is_ok();
        assert!(!ok(datetime!(1999-12-31 23:59:59 UTC)));
        assert!(ok(datetime!(2000-01-01 0:00 UTC)));
        assert!(ok(datetime!(2026-12-02 12:05 UTC)), "within the skew");
        assert!(!ok(datetime!(2026-12-02 12:05:01 UTC)), "beyond the skew");
        let ends = |at| timestamp("endsAt", at, Moment::Ends, &b).is_ok();
        assert!(
            ends(datetime!(2099-12-31 23:59:59 UTC)),
            "ends may be far ahead"
        );
        assert!(!ends(datetime!(2100-01-01 0:00 UTC)));
        assert!(!ends(datetime!(1900-01-01 0:00 UTC)));
    }

    #[test]
    fn nul_anywhere_is_refused_with_the_field_named() {
        let mut e = event();
        e.principal_id = "p\0".into();
        let error = events(&[event(), e], &bounds()).unwrap_err();
        assert_eq!(error.code(), "invalid_character");
        assert!(error.to_string().starts_with("[1].principalId"), "{error}");

        let mut e = event();
        e.user = Some(serde_json::json!({"givenName": "A\u{0}"}));
        let error = events(&[e], &bounds()).unwrap_err();
        assert!(error.to_string().starts_with("user.givenName"), "{error}");
    }
}
