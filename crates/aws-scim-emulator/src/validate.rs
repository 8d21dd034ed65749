//! Validation and canonical form of user and group documents.
//!
//! A user is stored as its canonical attribute map (without `id`, `meta`, `schemas`). The same
//! function validates POST/PUT bodies and the result of applying a PATCH, so every write path
//! enforces the same rules.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::errors::ApiError;
use super::settings::EmulatorSettings;
use super::ENTERPRISE_USER_URN;

/// Most members accepted on POST /Groups and most membership changes per PATCH.
pub(crate) const MAX_MEMBER_CHANGES: usize = 100;

const NO_WHITESPACE_PATTERN: &str = r"[\p{L}\p{M}\p{S}\p{N}\p{P}]+";
const TEXT_PATTERN: &str = r"[\p{L}\p{M}\p{S}\p{N}\p{P}\t\n\r \x{A0}\x{3000}]+";
const STRICT_REFUSED: &[char] = &['\t', '\r', '\n', '"', '<', '>', ';', ':', '%'];
const RESERVED_NAMES: &[&str] = &["Administrator", "AWSAdministrators"];

#[allow(clippy::expect_used)] // constant patterns, exercised by the unit tests below
fn anchored(pattern: &str) -> Regex {
    Regex::new(&format!("^{pattern}$")).expect("constant regex compiles")
}

static NO_WHITESPACE: LazyLock<Regex> = LazyLock::new(|| anchored(NO_WHITESPACE_PATTERN));
static TEXT: LazyLock<Regex> = LazyLock::new(|| anchored(TEXT_PATTERN));

#[derive(Clone, Copy)]
enum Pattern {
    NoWhitespace,
    Text,
}

#[derive(Clone, Copy)]
struct Rule {
    max: usize,
    pattern: Pattern,
    strict: bool,
}

const USER_NAME: Rule = Rule {
    max: 128,
    pattern: Pattern::NoWhitespace,
    strict: true,
};
const EXTERNAL_ID: Rule = Rule {
    max: 256,
    pattern: Pattern::NoWhitespace,
    strict: true,
};
const TEXT_RULE: Rule = Rule {
    max: 1024,
    pattern: Pattern::Text,
    strict: true,
};
const URL_RULE: Rule = Rule {
    max: 1024,
    pattern: Pattern::Text,
    strict: false,
};
const ID_RULE: Rule = Rule {
    max: 47,
    pattern: Pattern::NoWhitespace,
    strict: false,
};

/// Value of `key` in `obj`, matching the attribute name case-insensitively (RFC 7643 §2.1);
/// `null` counts as absent.
pub(crate) fn attr<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

/// `true`/`false` or the strings `"true"`/`"false"` (any case).
pub(crate) fn parse_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn check_str(
    path: &str,
    value: &Value,
    rule: Rule,
    settings: &EmulatorSettings,
) -> Result<String, ApiError> {
    let Value::String(s) = value else {
        return Err(ApiError::constraint(path, "Member must be a string"));
    };
    let len = s.chars().count();
    if len < 1 {
        return Err(ApiError::constraint(
            path,
            "Member must have length greater than or equal to 1",
        ));
    }
    if len > rule.max {
        return Err(ApiError::constraint(
            path,
            &format!("Member must have length less than or equal to {}", rule.max),
        ));
    }
    let (re, text) = match rule.pattern {
        Pattern::NoWhitespace => (&*NO_WHITESPACE, NO_WHITESPACE_PATTERN),
        Pattern::Text => (&*TEXT, TEXT_PATTERN),
    };
    if !re.is_match(s) {
        return Err(ApiError::constraint(
            path,
            &format!("Member must satisfy regular expression pattern: {text}"),
        ));
    }
    if rule.strict && settings.strict_characters && s.contains(STRICT_REFUSED) {
        return Err(ApiError::unparsable());
    }
    Ok(s.clone())
}

fn check_reserved(path: &str, name: &str, settings: &EmulatorSettings) -> Result<(), ApiError> {
    if settings.reserved_names && RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(ApiError::bad_request(format!(
            "Value at '{path}' is a reserved name and cannot be used."
        )));
    }
    Ok(())
}

fn refuse_unsupported(
    obj: &Map<String, Value>,
    path: &str,
    unsupported: &[&str],
) -> Result<(), ApiError> {
    for name in unsupported {
        if attr(obj, name).is_some() {
            let full = if path.is_empty() {
                (*name).to_owned()
            } else {
                format!("{path}.{name}")
            };
            return Err(ApiError::bad_request(format!(
                "Attribute {full} is not supported."
            )));
        }
    }
    Ok(())
}

/// Copies the listed string sub-attributes of `from` into `to`, validated.
fn copy_strings(
    from: &Map<String, Value>,
    to: &mut Map<String, Value>,
    path: &str,
    names: &[&str],
    rule: Rule,
    settings: &EmulatorSettings,
) -> Result<(), ApiError> {
    for name in names {
        if let Some(v) = attr(from, name) {
            let full = if path.is_empty() {
                (*name).to_owned()
            } else {
                format!("{path}.{name}")
            };
            to.insert(
                (*name).to_owned(),
                Value::String(check_str(&full, v, rule, settings)?),
            );
        }
    }
    Ok(())
}

fn require_object<'a>(path: &str, value: &'a Value) -> Result<&'a Map<String, Value>, ApiError> {
    value
        .as_object()
        .ok_or_else(|| ApiError::constraint(path, "Member must be an object"))
}

fn required<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<&'a Value, ApiError> {
    attr(obj, name).ok_or_else(|| ApiError::constraint(path, "Member must not be null"))
}

/// Validates a single-valued list attribute and returns its element, if any.
fn single_element<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    let Some(value) = attr(obj, name) else {
        return Ok(None);
    };
    let Value::Array(items) = value else {
        return Err(ApiError::constraint(name, "Member must be a list"));
    };
    if items.len() > 1 {
        return Err(ApiError::bad_request(format!(
            "List attribute {name} exceeds allowed limit of 1"
        )));
    }
    match items.first() {
        None => Ok(None),
        Some(item) => Ok(Some(require_object(&format!("{name}[0]"), item)?)),
    }
}

fn copy_primary(
    from: &Map<String, Value>,
    to: &mut Map<String, Value>,
    path: &str,
) -> Result<Option<bool>, ApiError> {
    match attr(from, "primary") {
        None => Ok(None),
        Some(v) => {
            let b = parse_bool(v).ok_or_else(|| {
                ApiError::constraint(&format!("{path}.primary"), "Member must be a boolean")
            })?;
            to.insert("primary".to_owned(), Value::Bool(b));
            Ok(Some(b))
        }
    }
}

/// Validates a user document (POST/PUT body or patched document) and returns its canonical
/// attribute map.
pub(crate) fn canonical_user(
    input: &Value,
    settings: &EmulatorSettings,
) -> Result<Map<String, Value>, ApiError> {
    let obj = input.as_object().ok_or_else(ApiError::unparsable)?;
    refuse_unsupported(
        obj,
        "",
        &[
            "groups",
            "entitlements",
            "ims",
            "photos",
            "x509Certificates",
            "password",
        ],
    )?;
    let mut out = Map::new();

    let user_name = check_str(
        "userName",
        required(obj, "userName", "userName")?,
        USER_NAME,
        settings,
    )?;
    check_reserved("userName", &user_name, settings)?;
    out.insert("userName".to_owned(), Value::String(user_name));

    if let Some(v) = attr(obj, "externalId") {
        out.insert(
            "externalId".to_owned(),
            Value::String(check_str("externalId", v, EXTERNAL_ID, settings)?),
        );
    }

    let name_in = require_object("name", required(obj, "name", "name.givenName")?)?;
    required(name_in, "givenName", "name.givenName")?;
    required(name_in, "familyName", "name.familyName")?;
    let mut name = Map::new();
    copy_strings(
        name_in,
        &mut name,
        "name",
        &[
            "formatted",
            "familyName",
            "givenName",
            "middleName",
            "honorificPrefix",
            "honorificSuffix",
        ],
        TEXT_RULE,
        settings,
    )?;
    out.insert("name".to_owned(), Value::Object(name));

    let display = check_str(
        "displayName",
        required(obj, "displayName", "displayName")?,
        TEXT_RULE,
        settings,
    )?;
    out.insert("displayName".to_owned(), Value::String(display));
    copy_strings(
        obj,
        &mut out,
        "",
        &[
            "nickName",
            "title",
            "userType",
            "preferredLanguage",
            "locale",
            "timezone",
        ],
        TEXT_RULE,
        settings,
    )?;
    copy_strings(obj, &mut out, "", &["profileUrl"], URL_RULE, settings)?;

    let active = match attr(obj, "active") {
        None => true,
        Some(v) => parse_bool(v)
            .ok_or_else(|| ApiError::constraint("active", "Member must be a boolean"))?,
    };
    out.insert("active".to_owned(), Value::Bool(active));

    if let Some(email) = single_element(obj, "emails")? {
        refuse_unsupported(email, "emails", &["display"])?;
        let mut e = Map::new();
        e.insert(
            "value".to_owned(),
            Value::String(check_str(
                "emails[0].value",
                required(email, "value", "emails[0].value")?,
                TEXT_RULE,
                settings,
            )?),
        );
        copy_strings(email, &mut e, "emails[0]", &["type"], TEXT_RULE, settings)?;
        if copy_primary(email, &mut e, "emails[0]")? != Some(true) {
            return Err(ApiError::bad_request(
                "The email address must be marked as primary (\"primary\": true).",
            ));
        }
        out.insert("emails".to_owned(), Value::Array(vec![Value::Object(e)]));
    }

    if let Some(phone) = single_element(obj, "phoneNumbers")? {
        refuse_unsupported(phone, "phoneNumbers", &["display"])?;
        let mut p = Map::new();
        copy_strings(
            phone,
            &mut p,
            "phoneNumbers[0]",
            &["value", "type"],
            TEXT_RULE,
            settings,
        )?;
        copy_primary(phone, &mut p, "phoneNumbers[0]")?;
        out.insert(
            "phoneNumbers".to_owned(),
            Value::Array(vec![Value::Object(p)]),
        );
    }

    if let Some(address) = single_element(obj, "addresses")? {
        refuse_unsupported(address, "addresses", &["display"])?;
        let mut a = Map::new();
        copy_strings(
            address,
            &mut a,
            "addresses[0]",
            &[
                "formatted",
                "streetAddress",
                "locality",
                "region",
                "postalCode",
                "country",
                "type",
            ],
            TEXT_RULE,
            settings,
        )?;
        copy_primary(address, &mut a, "addresses[0]")?;
        out.insert("addresses".to_owned(), Value::Array(vec![Value::Object(a)]));
    }

    if let Some(role) = single_element(obj, "roles")? {
        if let Some(other) = role.keys().find(|k| {
            !["value", "type", "primary"]
                .iter()
                .any(|a| a.eq_ignore_ascii_case(k))
        }) {
            return Err(ApiError::bad_request(format!(
                "Attribute roles.{other} is not supported."
            )));
        }
        let mut r = Map::new();
        copy_strings(
            role,
            &mut r,
            "roles[0]",
            &["value", "type"],
            TEXT_RULE,
            settings,
        )?;
        copy_primary(role, &mut r, "roles[0]")?;
        out.insert("roles".to_owned(), Value::Array(vec![Value::Object(r)]));
    }

    if let Some(ext_in) = attr(obj, ENTERPRISE_USER_URN) {
        let ext_in = require_object(ENTERPRISE_USER_URN, ext_in)?;
        let mut ext = Map::new();
        copy_strings(
            ext_in,
            &mut ext,
            "enterprise",
            &[
                "employeeNumber",
                "costCenter",
                "organization",
                "division",
                "department",
            ],
            TEXT_RULE,
            settings,
        )?;
        if let Some(manager) = attr(ext_in, "manager") {
            let value = match manager {
                Value::Object(m) => {
                    refuse_unsupported(m, "manager", &["displayName"])?;
                    attr(m, "value").cloned()
                }
                other => Some(other.clone()),
            };
            if let Some(value) = value {
                let id = check_str("enterprise.manager.value", &value, ID_RULE, settings)?;
                let mut m = Map::new();
                m.insert("value".to_owned(), Value::String(id));
                ext.insert("manager".to_owned(), Value::Object(m));
            }
        }
        if !ext.is_empty() {
            out.insert(ENTERPRISE_USER_URN.to_owned(), Value::Object(ext));
        }
    }
    Ok(out)
}

/// Validates a group displayName.
pub(crate) fn group_display_name(
    value: &Value,
    settings: &EmulatorSettings,
) -> Result<String, ApiError> {
    let name = check_str("displayName", value, TEXT_RULE, settings)?;
    check_reserved("displayName", &name, settings)?;
    Ok(name)
}

/// Validates an externalId (users and groups).
pub(crate) fn external_id(value: &Value, settings: &EmulatorSettings) -> Result<String, ApiError> {
    check_str("externalId", value, EXTERNAL_ID, settings)
}

/// Member ids of a `members` value: a non-empty list of `{"value": "<id>"}`.
pub(crate) fn member_values(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let Some(Value::Array(items)) = value else {
        return Err(ApiError::bad_request(
            "Member operations need a non-empty list of members; replacing or removing all members is not supported.",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "Member operations need a non-empty list of members; replacing or removing all members is not supported.",
        ));
    }
    items
        .iter()
        .map(|item| {
            let obj = item.as_object().ok_or_else(ApiError::unparsable)?;
            refuse_unsupported(obj, "members", &["display"])?;
            match attr(obj, "value") {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(ApiError::unparsable()),
            }
        })
        .collect()
}

/// A validated POST /Groups body.
#[derive(Debug)]
pub(crate) struct GroupInput {
    pub display_name: String,
    pub external_id: Option<String>,
    pub members: Vec<String>,
}

pub(crate) fn group_input(
    input: &Value,
    settings: &EmulatorSettings,
) -> Result<GroupInput, ApiError> {
    let obj = input.as_object().ok_or_else(ApiError::unparsable)?;
    let display_name = group_display_name(
        attr(obj, "displayName")
            .ok_or_else(|| ApiError::constraint("displayName", "Member must not be null"))?,
        settings,
    )?;
    let external_id = attr(obj, "externalId")
        .map(|v| external_id(v, settings))
        .transpose()?;
    let members = match attr(obj, "members") {
        None => Vec::new(),
        Some(Value::Array(items)) if items.is_empty() => Vec::new(),
        Some(v) => member_values(Some(v))?,
    };
    if members.len() > MAX_MEMBER_CHANGES {
        return Err(ApiError::bad_request(format!(
            "{} A group can be created with at most {MAX_MEMBER_CHANGES} members.",
            super::errors::UNPARSABLE
        )));
    }
    let mut unique = Vec::with_capacity(members.len());
    for m in members {
        if !unique.contains(&m) {
            unique.push(m);
        }
    }
    Ok(GroupInput {
        display_name,
        external_id,
        members: unique,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({"userName": "alice", "name": {"givenName": "Alice", "familyName": "Liddell"}, "displayName": "Alice Liddell"})
    }

    #[test]
    fn a_minimal_user_is_accepted_and_active_by_default() {
        let doc = canonical_user(&minimal(), &EmulatorSettings::default());
        assert_eq!(doc.map(|d| d["active"].clone()), Ok(json!(true)));
    }

    #[test]
    fn the_name_pattern_accepts_spaces_and_refuses_zero_width_space() {
        let s = EmulatorSettings::default();
        assert!(check_str("x", &json!("Anna Maria\u{a0}Ü"), TEXT_RULE, &s).is_ok());
        assert!(check_str("x", &json!("Anna\u{200b}Maria"), TEXT_RULE, &s).is_err());
    }

    #[test]
    fn user_names_with_whitespace_are_refused() {
        let s = EmulatorSettings::default();
        assert!(check_str("userName", &json!("a b"), USER_NAME, &s).is_err());
        assert!(check_str("userName", &json!("a.b@example.com"), USER_NAME, &s).is_ok());
    }

    #[test]
    fn strict_mode_is_a_switch() {
        let mut s = EmulatorSettings::default();
        assert!(check_str("x", &json!("a:b"), TEXT_RULE, &s).is_err());
        s.strict_characters = false;
        assert!(check_str("x", &json!("a:b"), TEXT_RULE, &s).is_ok());
    }

    #[test]
    fn string_booleans_parse_in_any_case() {
        assert_eq!(parse_bool(&json!("False")), Some(false));
        assert_eq!(parse_bool(&json!("TRUE")), Some(true));
        assert_eq!(parse_bool(&json!("yes")), None);
    }
}
