//! The filter subset AWS accepts: `attr eq "value"`, optionally `and` one more such clause,
//! for a fixed set of attribute combinations. Anything else is a 400.

use super::errors::ApiError;
use super::settings::EmulatorSettings;

/// Filters accepted on GET /Users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UserFilter {
    All,
    UserName(String),
    ExternalId(String),
    /// `groups.value eq "<groupId>"`: the members of a group.
    GroupsValue(String),
    Id(String),
    IdAndManager {
        id: String,
        manager: String,
    },
}

/// Filters accepted on GET /Groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupFilter {
    All,
    DisplayName(String),
    ExternalId(String),
    /// `members.value eq "<userId>"`: the groups of a user.
    MembersValue(String),
    Id(String),
    IdAndMembers {
        id: String,
        member: String,
    },
}

struct Clause {
    attr: String,
    value: String,
}

fn unsupported(detail: &str) -> ApiError {
    ApiError::bad_request(format!("Unsupported filter: {detail}"))
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl Parser<'_> {
    /// Skips spaces and returns how many there were.
    fn spaces(&mut self) -> usize {
        let mut n = 0;
        while self.chars.next_if(|c| *c == ' ').is_some() {
            n += 1;
        }
        n
    }

    fn word(&mut self) -> String {
        let mut out = String::new();
        while let Some(c) = self
            .chars
            .next_if(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '_' | '-' | '$'))
        {
            out.push(c);
        }
        out
    }

    fn quoted(&mut self) -> Result<String, ApiError> {
        if self.chars.next_if_eq(&'"').is_none() {
            return Err(unsupported("the value must be a string in double quotes"));
        }
        let mut out = String::new();
        loop {
            match self.chars.next() {
                None => return Err(ApiError::unparsable()),
                Some('"') => return Ok(out),
                Some('\\') => match self.chars.next() {
                    Some(c) => out.push(c),
                    None => return Err(ApiError::unparsable()),
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn at_end(&mut self) -> bool {
        self.chars.peek().is_none()
    }
}

fn parse_clauses(raw: &str) -> Result<Vec<Clause>, ApiError> {
    let mut p = Parser {
        chars: raw.chars().peekable(),
    };
    let mut clauses = Vec::new();
    p.spaces();
    loop {
        let attr = p.word();
        if attr.is_empty() {
            return Err(ApiError::unparsable());
        }
        if p.spaces() == 0 {
            return Err(ApiError::unparsable());
        }
        let op = p.word();
        if !op.eq_ignore_ascii_case("eq") {
            return Err(unsupported(&format!(
                "operator '{op}' (only 'eq' is supported)"
            )));
        }
        if p.spaces() == 0 {
            return Err(ApiError::unparsable());
        }
        let value = p.quoted()?;
        clauses.push(Clause { attr, value });
        let gap = p.spaces();
        if p.at_end() {
            break;
        }
        let keyword = p.word();
        if gap == 0 || !keyword.eq_ignore_ascii_case("and") {
            return Err(unsupported(&format!(
                "'{keyword}' (only a single 'and' is supported)"
            )));
        }
        if p.spaces() == 0 {
            return Err(ApiError::unparsable());
        }
    }
    if clauses.len() > 2 {
        return Err(unsupported("more than one 'and'"));
    }
    for clause in &clauses {
        if clause.value.is_empty() {
            return Err(ApiError::unparsable());
        }
    }
    Ok(clauses)
}

fn is(attr: &str, name: &str) -> bool {
    attr.eq_ignore_ascii_case(name)
}

/// Parses the `filter` parameter of GET /Users.
pub(crate) fn user_filter(raw: Option<&str>) -> Result<UserFilter, ApiError> {
    let Some(raw) = raw else {
        return Ok(UserFilter::All);
    };
    let mut clauses = parse_clauses(raw)?;
    match clauses.len() {
        1 => {
            let Clause { attr, value } = clauses.remove(0);
            if is(&attr, "userName") {
                Ok(UserFilter::UserName(value))
            } else if is(&attr, "externalId") {
                Ok(UserFilter::ExternalId(value))
            } else if is(&attr, "groups.value") {
                Ok(UserFilter::GroupsValue(value))
            } else if is(&attr, "id") {
                Ok(UserFilter::Id(value))
            } else {
                Err(unsupported(&format!("attribute '{attr}'")))
            }
        }
        _ => {
            let (id, other) = id_first(clauses);
            if is(&id.attr, "id") && is(&other.attr, "manager") {
                Ok(UserFilter::IdAndManager {
                    id: id.value,
                    manager: other.value,
                })
            } else {
                Err(unsupported(
                    "only 'id eq .. and manager eq ..' may be combined",
                ))
            }
        }
    }
}

/// The two clauses of an `and` filter, the `id` clause first when there is one (AWS accepts
/// either order).
fn id_first(mut clauses: Vec<Clause>) -> (Clause, Clause) {
    let b = clauses.remove(1);
    let a = clauses.remove(0);
    if is(&a.attr, "id") {
        (a, b)
    } else {
        (b, a)
    }
}

/// Parses the `filter` parameter of GET /Groups.
pub(crate) fn group_filter(
    raw: Option<&str>,
    settings: &EmulatorSettings,
) -> Result<GroupFilter, ApiError> {
    let Some(raw) = raw else {
        return Ok(GroupFilter::All);
    };
    let mut clauses = parse_clauses(raw)?;
    let is_members = |attr: &str| {
        is(attr, "members") || (settings.accept_member_filter_alias && is(attr, "member"))
    };
    match clauses.len() {
        1 => {
            let Clause { attr, value } = clauses.remove(0);
            if is(&attr, "displayName") {
                Ok(GroupFilter::DisplayName(value))
            } else if is(&attr, "externalId") {
                Ok(GroupFilter::ExternalId(value))
            } else if is(&attr, "members.value") {
                Ok(GroupFilter::MembersValue(value))
            } else if is(&attr, "id") {
                Ok(GroupFilter::Id(value))
            } else {
                Err(unsupported(&format!("attribute '{attr}'")))
            }
        }
        _ => {
            let (id, other) = id_first(clauses);
            if is(&id.attr, "id") && is_members(&other.attr) {
                Ok(GroupFilter::IdAndMembers {
                    id: id.value,
                    member: other.value,
                })
            } else {
                Err(unsupported(
                    "only 'id eq .. and members eq ..' may be combined",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(raw: &str) -> Result<GroupFilter, ApiError> {
        group_filter(Some(raw), &EmulatorSettings::default())
    }

    #[test]
    fn simple_equality_filters_parse() {
        assert_eq!(
            user_filter(Some(r#"userName eq "a\"b""#)),
            Ok(UserFilter::UserName("a\"b".into()))
        );
        assert_eq!(
            user_filter(Some(r#"groups.value eq "g""#)),
            Ok(UserFilter::GroupsValue("g".into()))
        );
        assert_eq!(
            groups(r#"displayName EQ "x y""#),
            Ok(GroupFilter::DisplayName("x y".into()))
        );
    }

    #[test]
    fn id_and_members_parse_in_either_order() {
        let expected = Ok(GroupFilter::IdAndMembers {
            id: "g".into(),
            member: "u".into(),
        });
        assert_eq!(groups(r#"id eq "g" and members eq "u""#), expected);
        assert_eq!(groups(r#"members eq "u" and id eq "g""#), expected);
        assert_eq!(groups(r#"member eq "u" and id eq "g""#), expected);
    }

    #[test]
    fn everything_else_is_refused() {
        for raw in [
            r#"userName ne "a""#,
            r#"userName eq "a" or userName eq "b""#,
            r#"id eq "a" and manager eq "b" and id eq "c""#,
            r#"emails.value eq "a""#,
            r#"userName eq a"#,
            r#"userName eq """#,
            r#"userName eq "a"#,
            r#"userName pr"#,
            r#"userName eq "a" and externalId eq "b""#,
            "",
        ] {
            assert!(user_filter(Some(raw)).is_err(), "{raw} should be refused");
        }
        assert!(groups(r#"members eq "u""#).is_err());
        assert!(groups(r#"displayName eq "a" and members eq "u""#).is_err());
    }
}
