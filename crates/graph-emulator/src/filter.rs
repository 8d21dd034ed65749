//! The `$filter` forms the assignment-instance listing accepts:
//! `groupId eq '<id>'`, optionally `and principalId eq '<id>'` (either order). OData string
//! literals are single-quoted with `''` for a quote. Anything else is refused, as Graph
//! refuses listing these instances without a group or principal to narrow them down.

/// A parsed instance filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstanceFilter {
    pub group_id: String,
    pub principal_id: Option<String>,
}

/// Parses `text`; the error says what is wrong, for the 400 message.
pub(crate) fn parse_instance_filter(text: &str) -> Result<InstanceFilter, String> {
    let mut rest = text.trim();
    let mut group_id = None;
    let mut principal_id = None;
    loop {
        let (property, after) = split_word(rest);
        let (operator, after) = split_word(after);
        if !operator.eq_ignore_ascii_case("eq") {
            return Err(format!(
                "expected `<property> eq '<value>'`, found {:?}",
                rest.chars().take(40).collect::<String>()
            ));
        }
        let (value, after) = string_literal(after.trim_start())?;
        let slot = if property.eq_ignore_ascii_case("groupId") {
            &mut group_id
        } else if property.eq_ignore_ascii_case("principalId") {
            &mut principal_id
        } else {
            return Err(format!("filtering on {property:?} is not supported"));
        };
        if slot.replace(value).is_some() {
            return Err(format!("{property} appears twice"));
        }
        let after = after.trim_start();
        if after.is_empty() {
            break;
        }
        let (conjunction, after) = split_word(after);
        if !conjunction.eq_ignore_ascii_case("and") {
            return Err(format!(
                "only `and` may join clauses, found {conjunction:?}"
            ));
        }
        rest = after;
    }
    let group_id = group_id.ok_or("a groupId eq clause is required")?;
    Ok(InstanceFilter {
        group_id,
        principal_id,
    })
}

/// The first whitespace-delimited word and what follows it.
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    (&text[..end], &text[end..])
}

/// A single-quoted OData string at the start of `text` and what follows it.
fn string_literal(text: &str) -> Result<(String, &str), String> {
    let body = text
        .strip_prefix('\'')
        .ok_or("values must be single-quoted strings")?;
    let mut value = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\'' {
            value.push(c);
        } else if chars.peek().is_some_and(|(_, next)| *next == '\'') {
            value.push('\'');
            chars.next();
        } else {
            return Ok((value, &body[i + 1..]));
        }
    }
    Err("unterminated string literal".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::odata_string;

    fn ok(text: &str) -> InstanceFilter {
        parse_instance_filter(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn the_group_form_and_the_group_and_principal_forms_parse() {
        assert_eq!(
            ok("groupId eq 'g1'"),
            InstanceFilter {
                group_id: "g1".into(),
                principal_id: None
            }
        );
        let both = InstanceFilter {
            group_id: "g1".into(),
            principal_id: Some("u1".into()),
        };
        assert_eq!(ok("groupId eq 'g1' and principalId eq 'u1'"), both);
        assert_eq!(ok("  principalId eq 'u1'   AND groupId EQ 'g1' "), both);
    }

    #[test]
    fn quotes_the_client_escapes_come_back_unescaped() {
        for id in ["o'brien", "''", "a b", "x'", "'", "ünï"] {
            let text = format!("groupId eq {}", odata_string(id));
            assert_eq!(ok(&text).group_id, id, "{text}");
        }
    }

    #[test]
    fn other_forms_are_refused() {
        for text in [
            "",
            "groupId",
            "groupId eq g1",
            "groupId ne 'g1'",
            "groupId eq 'g1",
            "principalId eq 'u1'",
            "accessId eq 'member'",
            "groupId eq 'g1' or principalId eq 'u1'",
            "groupId eq 'g1' and groupId eq 'g2'",
            "groupId eq 'g1' and",
            "groupId eq 'g1' extra",
            "startswith(groupId, 'g')",
        ] {
            assert!(
                parse_instance_filter(text).is_err(),
                "{text:?} was accepted"
            );
        }
    }
}
