//! Entra user → AWS SCIM user, and the checks AWS would otherwise fail us on.
//!
//! AWS refuses users without `userName`, `name.givenName`, `name.familyName` or
//! `displayName`, more than one email or phone number, empty strings, and a handful of
//! characters that Entra happily stores (docs/emulator.md; Microsoft's AWS provisioning
//! tutorial). Finding that out from a 400 costs a request, a throttle token and a vague
//! "violates schema" message; checking here costs nothing and names the attribute.
//!
//! Errors and logs name the attribute and the reason, never the value: values are personal
//! data.

use thiserror::Error;

use super::types::{EnterpriseUser, MultiValuedAttribute, Name, ScimUser, SCHEMA_USER};

/// What to do with a character AWS refuses. Chosen per application.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CharacterPolicy {
    /// Refuse the user (or group) with a [`MappingError`]; nothing is sent.
    #[default]
    Reject,
    /// Remove the characters, log a warning naming the attribute, and send the rest.
    Strip,
}

/// `userName`: 1–128 characters (Identity Store model).
pub const MAX_USER_NAME_CHARS: usize = 128;
/// `externalId`: 1–256 characters.
pub const MAX_EXTERNAL_ID_CHARS: usize = 256;
/// Every other string attribute: 1–1024 characters.
pub const MAX_ATTRIBUTE_CHARS: usize = 1024;

/// The work type AWS expects on the single email and phone number.
const WORK: &str = "work";

/// An Entra user, as read from Microsoft Graph, reduced to what AWS can store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceUser {
    /// Entra object id; immutable, so it becomes `externalId` (AWS's own advice).
    pub object_id: String,
    /// `userPrincipalName`.
    pub user_name: Option<String>,
    pub given_name: Option<String>,
    /// Graph's `surname`.
    pub family_name: Option<String>,
    pub display_name: Option<String>,
    /// `mail` (plus any others the caller chose to map); AWS takes exactly one.
    pub emails: Vec<String>,
    /// `businessPhones`/`mobilePhone` as mapped by the caller; AWS takes at most one.
    pub phone_numbers: Vec<String>,
    pub title: Option<String>,
    pub preferred_language: Option<String>,
    pub department: Option<String>,
    pub employee_number: Option<String>,
}

/// Why a user or group cannot be sent to AWS as it is. Messages name the attribute, never
/// its value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MappingError {
    #[error("attribute `{attribute}` is required by AWS but is missing or empty")]
    Missing { attribute: &'static str },
    #[error("attribute `{attribute}` has {count} values but AWS accepts at most one")]
    MultiValued {
        attribute: &'static str,
        count: usize,
    },
    #[error("attribute `{attribute}` contains {character}, which AWS refuses")]
    RefusedCharacter {
        attribute: &'static str,
        /// A description of the character, e.g. "a colon (`:`)".
        character: &'static str,
    },
    #[error("attribute `{attribute}` contains whitespace, which AWS refuses in this attribute")]
    Whitespace { attribute: &'static str },
    #[error("attribute `{attribute}` has {length} characters; AWS accepts at most {max}")]
    TooLong {
        attribute: &'static str,
        length: usize,
        max: usize,
    },
}

impl MappingError {
    /// The attribute at fault.
    pub fn attribute(&self) -> &'static str {
        match self {
            Self::Missing { attribute }
            | Self::MultiValued { attribute, .. }
            | Self::RefusedCharacter { attribute, .. }
            | Self::Whitespace { attribute }
            | Self::TooLong { attribute, .. } => attribute,
        }
    }
}

/// Describes a character AWS refuses, or `None` if it is acceptable.
///
/// The list is Microsoft's (tab, LF, CR, `"`, `<`, `>`, `;`, `:`, `%`) plus the zero-width
/// space, which AWS rejects in names (docs/emulator.md).
fn refused_character(c: char) -> Option<&'static str> {
    Some(match c {
        '\t' => "a tab",
        '\n' => "a line feed",
        '\r' => "a carriage return",
        '"' => "a double quote (`\"`)",
        '<' => "a less-than sign (`<`)",
        '>' => "a greater-than sign (`>`)",
        ';' => "a semicolon (`;`)",
        ':' => "a colon (`:`)",
        '%' => "a percent sign (`%`)",
        '\u{200B}' => "a zero-width space",
        _ => return None,
    })
}

/// How strictly one attribute is checked.
#[derive(Debug, Clone, Copy)]
struct Rules {
    max_chars: usize,
    /// `userName` and `externalId` follow `[\p{L}\p{M}\p{S}\p{N}\p{P}]+`: no whitespace.
    no_whitespace: bool,
}

const TEXT: Rules = Rules {
    max_chars: MAX_ATTRIBUTE_CHARS,
    no_whitespace: false,
};
const USER_NAME: Rules = Rules {
    max_chars: MAX_USER_NAME_CHARS,
    no_whitespace: true,
};
const EXTERNAL_ID: Rules = Rules {
    max_chars: MAX_EXTERNAL_ID_CHARS,
    no_whitespace: true,
};

/// Checks (or, under [`CharacterPolicy::Strip`], cleans) one value. Leading and trailing
/// whitespace is trimmed first. Returns `None` when nothing is left, so the caller omits
/// the attribute instead of sending `""`.
fn clean(
    attribute: &'static str,
    value: &str,
    rules: Rules,
    policy: CharacterPolicy,
) -> Result<Option<String>, MappingError> {
    let trimmed = value.trim();
    let refused =
        |c: char| refused_character(c).is_some() || (rules.no_whitespace && c.is_whitespace());
    let cleaned = match trimmed.chars().find(|c| refused(*c)) {
        None => trimmed.to_owned(),
        Some(c) => match policy {
            CharacterPolicy::Reject => {
                return Err(match refused_character(c) {
                    Some(character) => MappingError::RefusedCharacter {
                        attribute,
                        character,
                    },
                    None => MappingError::Whitespace { attribute },
                });
            }
            CharacterPolicy::Strip => {
                tracing::warn!(
                    scim.attribute = attribute,
                    "removed characters AWS refuses from an attribute"
                );
                trimmed
                    .chars()
                    .filter(|c| !refused(*c))
                    .collect::<String>()
                    .trim()
                    .to_owned()
            }
        },
    };
    if cleaned.is_empty() {
        return Ok(None);
    }
    let length = cleaned.chars().count();
    if length > rules.max_chars {
        return Err(MappingError::TooLong {
            attribute,
            length,
            max: rules.max_chars,
        });
    }
    Ok(Some(cleaned))
}

/// [`clean`] over an optional attribute, in place.
fn clean_field(
    attribute: &'static str,
    field: &mut Option<String>,
    rules: Rules,
    policy: CharacterPolicy,
) -> Result<(), MappingError> {
    if let Some(value) = field.take() {
        *field = clean(attribute, &value, rules, policy)?;
    }
    Ok(())
}

fn require(attribute: &'static str, field: Option<&String>) -> Result<(), MappingError> {
    match field {
        Some(v) if !v.is_empty() => Ok(()),
        _ => Err(MappingError::Missing { attribute }),
    }
}

/// Checks a value used where AWS wants a group `displayName` (create or lookup) and
/// returns the value to send.
pub fn check_group_display_name(
    display_name: &str,
    policy: CharacterPolicy,
) -> Result<String, MappingError> {
    clean("displayName", display_name, TEXT, policy)?.ok_or(MappingError::Missing {
        attribute: "displayName",
    })
}

/// Checks a value used as a `userName` (create or lookup) and returns the value to send.
pub fn check_user_name(user_name: &str, policy: CharacterPolicy) -> Result<String, MappingError> {
    clean("userName", user_name, USER_NAME, policy)?.ok_or(MappingError::Missing {
        attribute: "userName",
    })
}

/// Checks a value used as an `externalId` and returns the value to send.
pub fn check_external_id(
    external_id: &str,
    policy: CharacterPolicy,
) -> Result<String, MappingError> {
    clean("externalId", external_id, EXTERNAL_ID, policy)?.ok_or(MappingError::Missing {
        attribute: "externalId",
    })
}

/// Makes a SCIM user fit for AWS's create/replace, in place: trims, applies `policy` to
/// every typed string attribute, drops values that end up empty, and enforces the required
/// attributes and single-valued lists. Attributes in `extra` are passed through unchecked.
pub fn check_user(user: &mut ScimUser, policy: CharacterPolicy) -> Result<(), MappingError> {
    for (attribute, count) in [
        ("emails", user.emails.len()),
        ("phoneNumbers", user.phone_numbers.len()),
        ("addresses", user.addresses.len()),
        ("roles", user.roles.len()),
    ] {
        if count > 1 {
            return Err(MappingError::MultiValued { attribute, count });
        }
    }

    clean_field("userName", &mut user.user_name, USER_NAME, policy)?;
    clean_field("externalId", &mut user.external_id, EXTERNAL_ID, policy)?;
    clean_field("displayName", &mut user.display_name, TEXT, policy)?;
    clean_field("nickName", &mut user.nick_name, TEXT, policy)?;
    clean_field("profileUrl", &mut user.profile_url, TEXT, policy)?;
    clean_field("title", &mut user.title, TEXT, policy)?;
    clean_field("userType", &mut user.user_type, TEXT, policy)?;
    clean_field(
        "preferredLanguage",
        &mut user.preferred_language,
        TEXT,
        policy,
    )?;
    clean_field("locale", &mut user.locale, TEXT, policy)?;
    clean_field("timezone", &mut user.timezone, TEXT, policy)?;

    if let Some(name) = user.name.as_mut() {
        clean_field("name.formatted", &mut name.formatted, TEXT, policy)?;
        clean_field("name.givenName", &mut name.given_name, TEXT, policy)?;
        clean_field("name.familyName", &mut name.family_name, TEXT, policy)?;
        clean_field("name.middleName", &mut name.middle_name, TEXT, policy)?;
        clean_field(
            "name.honorificPrefix",
            &mut name.honorific_prefix,
            TEXT,
            policy,
        )?;
        clean_field(
            "name.honorificSuffix",
            &mut name.honorific_suffix,
            TEXT,
            policy,
        )?;
    }
    for email in &mut user.emails {
        clean_field("emails.value", &mut email.value, TEXT, policy)?;
    }
    user.emails.retain(|e| e.value.is_some());
    for phone in &mut user.phone_numbers {
        clean_field("phoneNumbers.value", &mut phone.value, TEXT, policy)?;
    }
    user.phone_numbers.retain(|p| p.value.is_some());
    for role in &mut user.roles {
        clean_field("roles.value", &mut role.value, TEXT, policy)?;
    }
    user.roles.retain(|r| r.value.is_some());
    for address in &mut user.addresses {
        clean_field(
            "addresses.streetAddress",
            &mut address.street_address,
            TEXT,
            policy,
        )?;
        clean_field("addresses.locality", &mut address.locality, TEXT, policy)?;
        clean_field("addresses.region", &mut address.region, TEXT, policy)?;
        clean_field(
            "addresses.postalCode",
            &mut address.postal_code,
            TEXT,
            policy,
        )?;
        clean_field("addresses.country", &mut address.country, TEXT, policy)?;
        clean_field("addresses.formatted", &mut address.formatted, TEXT, policy)?;
    }
    if let Some(ent) = user.enterprise.as_mut() {
        clean_field(
            "enterprise.employeeNumber",
            &mut ent.employee_number,
            TEXT,
            policy,
        )?;
        clean_field("enterprise.costCenter", &mut ent.cost_center, TEXT, policy)?;
        clean_field(
            "enterprise.organization",
            &mut ent.organization,
            TEXT,
            policy,
        )?;
        clean_field("enterprise.division", &mut ent.division, TEXT, policy)?;
        clean_field("enterprise.department", &mut ent.department, TEXT, policy)?;
    }
    if user
        .enterprise
        .as_ref()
        .is_some_and(|e| *e == EnterpriseUser::default())
    {
        user.enterprise = None;
    }

    require("userName", user.user_name.as_ref())?;
    let name = user.name.as_ref();
    require("name.givenName", name.and_then(|n| n.given_name.as_ref()))?;
    require("name.familyName", name.and_then(|n| n.family_name.as_ref()))?;
    require("displayName", user.display_name.as_ref())?;
    Ok(())
}

/// Drops blank entries and exact duplicates; AWS counts what is left.
fn distinct_values(values: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Builds the SCIM create body for an Entra user: `userName` ← UPN, `externalId` ← object
/// id, one work email marked primary, at most one work phone, `active: true`; then runs
/// [`check_user`] so the result is exactly what will be sent.
pub fn map_user(source: &SourceUser, policy: CharacterPolicy) -> Result<ScimUser, MappingError> {
    let emails = distinct_values(&source.emails);
    if emails.len() > 1 {
        return Err(MappingError::MultiValued {
            attribute: "emails",
            count: emails.len(),
        });
    }
    let phones = distinct_values(&source.phone_numbers);
    if phones.len() > 1 {
        return Err(MappingError::MultiValued {
            attribute: "phoneNumbers",
            count: phones.len(),
        });
    }
    let external_id = check_external_id(&source.object_id, policy)?;

    let mut enterprise = None;
    if source.department.is_some() || source.employee_number.is_some() {
        enterprise = Some(EnterpriseUser {
            department: source.department.clone(),
            employee_number: source.employee_number.clone(),
            ..EnterpriseUser::default()
        });
    }
    let mut user = ScimUser {
        schemas: if enterprise.is_some() {
            vec![
                SCHEMA_USER.to_owned(),
                super::types::SCHEMA_ENTERPRISE_USER.to_owned(),
            ]
        } else {
            vec![SCHEMA_USER.to_owned()]
        },
        external_id: Some(external_id),
        user_name: source.user_name.clone(),
        name: Some(Name {
            given_name: source.given_name.clone(),
            family_name: source.family_name.clone(),
            ..Name::default()
        }),
        display_name: source.display_name.clone(),
        title: source.title.clone(),
        preferred_language: source.preferred_language.clone(),
        active: Some(true),
        emails: emails
            .iter()
            .map(|e| MultiValuedAttribute {
                value: Some((*e).to_owned()),
                kind: Some(WORK.to_owned()),
                primary: Some(true),
                display: None,
            })
            .collect(),
        phone_numbers: phones
            .iter()
            .map(|p| MultiValuedAttribute {
                value: Some((*p).to_owned()),
                kind: Some(WORK.to_owned()),
                primary: None,
                display: None,
            })
            .collect(),
        enterprise,
        ..ScimUser::default()
    };
    check_user(&mut user, policy)?;
    if user.enterprise.is_none() {
        user.schemas.retain(|s| s == SCHEMA_USER);
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alice() -> SourceUser {
        SourceUser {
            object_id: "6f1d2a3b-0000-4000-8000-000000000001".into(),
            user_name: Some("alice@contoso.example".into()),
            given_name: Some("Alice".into()),
            family_name: Some("Liddell".into()),
            display_name: Some("Alice Liddell".into()),
            emails: vec!["alice@contoso.example".into()],
            ..SourceUser::default()
        }
    }

    #[test]
    fn a_complete_entra_user_maps_to_the_aws_create_body() {
        let user = map_user(&alice(), CharacterPolicy::Reject).unwrap();
        assert_eq!(
            serde_json::to_value(&user).unwrap(),
            json!({
                "schemas": [SCHEMA_USER],
                "externalId": "6f1d2a3b-0000-4000-8000-000000000001",
                "userName": "alice@contoso.example",
                "name": {"givenName": "Alice", "familyName": "Liddell"},
                "displayName": "Alice Liddell",
                "active": true,
                "emails": [{"value": "alice@contoso.example", "type": "work", "primary": true}]
            })
        );
    }

    #[test]
    fn optional_attributes_that_are_empty_are_omitted_not_sent_as_empty_strings() {
        let mut source = alice();
        source.title = Some("  ".into());
        source.emails = vec![String::new(), " ".into()];
        source.phone_numbers = vec![String::new()];
        source.department = Some(String::new());
        let body =
            serde_json::to_value(map_user(&source, CharacterPolicy::Reject).unwrap()).unwrap();
        let text = body.to_string();
        assert!(!text.contains("\"\""), "no empty string in {text}");
        assert!(body.get("title").is_none());
        assert!(body.get("emails").is_none());
        assert!(body.get("phoneNumbers").is_none());
        assert!(body
            .get(crate::scim::types::SCHEMA_ENTERPRISE_USER)
            .is_none());
        assert_eq!(body["schemas"], json!([SCHEMA_USER]));
    }

    #[test]
    fn optional_attributes_that_are_present_are_mapped() {
        let mut source = alice();
        source.title = Some("Engineer".into());
        source.phone_numbers = vec!["+1 555 0100".into()];
        source.department = Some("Platform".into());
        let body =
            serde_json::to_value(map_user(&source, CharacterPolicy::Reject).unwrap()).unwrap();
        assert_eq!(body["title"], "Engineer");
        assert_eq!(
            body["phoneNumbers"],
            json!([{"value": "+1 555 0100", "type": "work"}])
        );
        assert_eq!(
            body[crate::scim::types::SCHEMA_ENTERPRISE_USER]["department"],
            "Platform"
        );
    }

    #[test]
    fn each_missing_required_attribute_is_named_in_the_error() {
        type Breaker = fn(&mut SourceUser);
        let cases: [(&str, Breaker); 5] = [
            ("userName", |s| s.user_name = None),
            ("name.givenName", |s| s.given_name = Some(" ".into())),
            ("name.familyName", |s| s.family_name = None),
            ("displayName", |s| s.display_name = Some(String::new())),
            ("externalId", |s| s.object_id = String::new()),
        ];
        for (attribute, break_it) in cases {
            let mut source = alice();
            break_it(&mut source);
            let err = map_user(&source, CharacterPolicy::Reject).unwrap_err();
            assert_eq!(err, MappingError::Missing { attribute }, "case {attribute}");
            assert!(
                err.to_string().contains(attribute),
                "message names {attribute}"
            );
        }
    }

    #[test]
    fn more_than_one_email_or_phone_is_refused() {
        let mut source = alice();
        source.emails = vec!["a@x.example".into(), "b@x.example".into()];
        assert_eq!(
            map_user(&source, CharacterPolicy::Strip).unwrap_err(),
            MappingError::MultiValued {
                attribute: "emails",
                count: 2
            }
        );
        let mut source = alice();
        source.phone_numbers = vec!["1".into(), "2".into(), "3".into()];
        let err = map_user(&source, CharacterPolicy::Reject).unwrap_err();
        assert_eq!(err.attribute(), "phoneNumbers");
        assert!(err.to_string().contains("3 values"));
    }

    #[test]
    fn duplicate_emails_count_once() {
        let mut source = alice();
        source.emails = vec!["a@x.example".into(), " a@x.example ".into()];
        let user = map_user(&source, CharacterPolicy::Reject).unwrap();
        assert_eq!(user.emails.len(), 1);
    }

    #[test]
    fn each_refused_character_is_rejected_with_the_attribute_named() {
        for c in ['\t', '\n', '\r', '"', '<', '>', ';', ':', '%', '\u{200B}'] {
            let mut source = alice();
            source.display_name = Some(format!("Alice{c}Liddell"));
            let err = map_user(&source, CharacterPolicy::Reject).unwrap_err();
            assert!(
                matches!(
                    err,
                    MappingError::RefusedCharacter {
                        attribute: "displayName",
                        ..
                    }
                ),
                "{c:?} gave {err:?}"
            );
            assert!(!err.to_string().contains("Alice"), "value leaked: {err}");
        }
    }

    #[test]
    fn refused_characters_in_names_and_group_names_are_rejected() {
        let mut source = alice();
        source.family_name = Some("Lid:dell".into());
        let err = map_user(&source, CharacterPolicy::Reject).unwrap_err();
        assert_eq!(err.attribute(), "name.familyName");
        let err = check_group_display_name("Hello: there", CharacterPolicy::Reject).unwrap_err();
        assert_eq!(
            err,
            MappingError::RefusedCharacter {
                attribute: "displayName",
                character: "a colon (`:`)"
            }
        );
    }

    #[test]
    fn whitespace_inside_user_name_or_external_id_is_rejected() {
        let mut source = alice();
        source.user_name = Some("alice liddell@contoso.example".into());
        assert_eq!(
            map_user(&source, CharacterPolicy::Reject).unwrap_err(),
            MappingError::Whitespace {
                attribute: "userName"
            }
        );
        let mut source = alice();
        source.object_id = "abc\u{00A0}def".into();
        assert_eq!(
            map_user(&source, CharacterPolicy::Reject).unwrap_err(),
            MappingError::Whitespace {
                attribute: "externalId"
            }
        );
        // Spaces are fine in display names.
        assert!(map_user(&alice(), CharacterPolicy::Reject).is_ok());
    }

    #[test]
    fn strip_policy_removes_refused_characters_and_keeps_the_rest() {
        let mut source = alice();
        source.display_name = Some("Alice \"The\" <Admin>; Liddell: 100%\t".into());
        source.user_name = Some("alice liddell@contoso.example".into());
        source.title = Some(":;".into());
        let user = map_user(&source, CharacterPolicy::Strip).unwrap();
        assert_eq!(
            user.display_name.as_deref(),
            Some("Alice The Admin Liddell 100")
        );
        assert_eq!(
            user.user_name.as_deref(),
            Some("aliceliddell@contoso.example")
        );
        assert_eq!(user.title, None, "a value stripped to nothing is omitted");
    }

    #[test]
    fn strip_policy_still_fails_a_required_attribute_stripped_to_nothing() {
        let mut source = alice();
        source.given_name = Some("::".into());
        assert_eq!(
            map_user(&source, CharacterPolicy::Strip).unwrap_err(),
            MappingError::Missing {
                attribute: "name.givenName"
            }
        );
        assert_eq!(
            check_group_display_name("%%", CharacterPolicy::Strip).unwrap_err(),
            MappingError::Missing {
                attribute: "displayName"
            }
        );
        assert_eq!(
            check_group_display_name("Ops: prod", CharacterPolicy::Strip).unwrap(),
            "Ops prod"
        );
    }

    #[test]
    fn overlong_values_are_refused() {
        let mut source = alice();
        source.user_name = Some(format!("{}@x", "a".repeat(MAX_USER_NAME_CHARS)));
        assert!(matches!(
            map_user(&source, CharacterPolicy::Reject).unwrap_err(),
            MappingError::TooLong {
                attribute: "userName",
                max: MAX_USER_NAME_CHARS,
                ..
            }
        ));
    }

    #[test]
    fn check_user_refuses_multi_valued_lists_on_a_hand_built_user() {
        let mut user = map_user(&alice(), CharacterPolicy::Reject).unwrap();
        user.roles = vec![
            MultiValuedAttribute::default(),
            MultiValuedAttribute::default(),
        ];
        assert_eq!(
            check_user(&mut user, CharacterPolicy::Reject).unwrap_err(),
            MappingError::MultiValued {
                attribute: "roles",
                count: 2
            }
        );
    }
}
