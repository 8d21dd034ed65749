//! SCIM 2.0 wire types (RFC 7643 resources, RFC 7644 messages) as AWS IAM Identity Center
//! speaks them.
//!
//! Every resource keeps the attributes we do not model in a flattened `extra` map, so a
//! resource read from AWS and written back (PUT) loses nothing, and the RFC examples
//! round-trip. Optional attributes are omitted when absent: AWS rejects empty strings
//! (docs/emulator.md), so `None` must never turn into `""`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// RFC 7643 §8.7.1: the core User schema.
pub const SCHEMA_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// RFC 7643 §8.7.1: the core Group schema.
pub const SCHEMA_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// RFC 7643 §4.3: the Enterprise User extension; also the JSON key holding its attributes.
pub const SCHEMA_ENTERPRISE_USER: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// RFC 7643 §5: ServiceProviderConfig.
pub const SCHEMA_SERVICE_PROVIDER_CONFIG: &str =
    "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
/// RFC 7644 §3.4.2: list responses.
pub const SCHEMA_LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// RFC 7644 §3.5.2: PATCH request bodies.
pub const SCHEMA_PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// RFC 7644 §3.12: error bodies.
pub const SCHEMA_ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// RFC 7644 §3.1 media type. AWS accepts it and plain `application/json` alike.
pub const CONTENT_TYPE_SCIM_JSON: &str = "application/scim+json";
/// Plain JSON: what we send, because every AWS client in the wild does and it works.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// AWS's request id header, kept in errors and logs to correlate with AWS support.
pub const HEADER_REQUEST_ID: &str = "x-amzn-requestid";

/// Attributes we do not model, kept verbatim so nothing is lost on a read-modify-write.
pub type ExtraAttributes = BTreeMap<String, Value>;

/// A SCIM User (RFC 7643 §4.1) with the attributes AWS supports typed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScimUser {
    /// Schema URNs; AWS does not require them on create but returns them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    /// Server-assigned id; absent on create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Our stable key for the user: the Entra object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Required by AWS; unique, case-insensitive, no whitespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Required by AWS (given and family name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    /// Required by AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nick_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// AWS accepts the string `"false"` in PATCH; we always send a boolean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// At most one element on AWS, marked primary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<MultiValuedAttribute>,
    /// At most one element on AWS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phone_numbers: Vec<MultiValuedAttribute>,
    /// At most one element on AWS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Address>,
    /// At most one element on AWS; only `value`, `type`, `primary`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<MultiValuedAttribute>,
    /// RFC 7643 §4.3 extension attributes.
    #[serde(
        rename = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enterprise: Option<EnterpriseUser>,
    /// Server metadata; never sent meaningfully by a client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Everything else (ims, photos, groups, x509Certificates, ...).
    #[serde(flatten)]
    pub extra: ExtraAttributes,
}

/// RFC 7643 §4.1.1 `name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Name {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honorific_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honorific_suffix: Option<String>,
}

/// RFC 7643 §2.4 multi-valued attribute element (emails, phoneNumbers, roles, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultiValuedAttribute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `work`, `home`, ...
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    /// Not supported by AWS; kept only so foreign resources round-trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// RFC 7643 §4.1.2 `addresses` element.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

/// RFC 7643 §4.3 Enterprise User extension.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnterpriseUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// AWS echoes only `value`; `$ref`/`displayName` are kept for round-trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<Reference>,
}

/// A reference to another resource (`manager`, group `members`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(rename = "$ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// RFC 7643 §3.1 `meta`. AWS sends only `resourceType`, `created`, `lastModified`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// Kept as text: AWS and the RFC differ in precision, and we only log it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A SCIM Group (RFC 7643 §4.2). AWS never returns `members` on GET (docs/emulator.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScimGroup {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Required and unique on AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `None` (absent) and `Some([])` both occur on AWS; kept apart for faithful round-trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<GroupMember>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    #[serde(flatten)]
    pub extra: ExtraAttributes,
}

/// A group `members` element (RFC 7643 §4.2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupMember {
    pub value: String,
    #[serde(rename = "$ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Not supported by AWS; kept for round-trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// RFC 7644 §3.4.2 list response, in either of AWS's two shapes (docs/emulator.md):
/// index mode (`totalResults`, which AWS sets to the page size, so never trust it) or
/// cursor mode (`nextCursor` until the last page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T> {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_results: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_per_page: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_index: Option<u64>,
    /// Present while more pages follow (cursor mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// AWS may omit it on empty results; treat absence as empty.
    #[serde(rename = "Resources", default = "Vec::new")]
    pub resources: Vec<T>,
}

/// RFC 7644 §3.5.2 PATCH body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchRequest {
    pub schemas: Vec<String>,
    #[serde(rename = "Operations")]
    pub operations: Vec<PatchOperation>,
}

impl PatchRequest {
    /// A PATCH body with the PatchOp schema set.
    pub fn new(operations: Vec<PatchOperation>) -> Self {
        Self {
            schemas: vec![SCHEMA_PATCH_OP.to_owned()],
            operations,
        }
    }

    /// `{"op": add|remove, "path": "members", "value": [{"value": id}, ...]}`: the member
    /// change shape every working AWS client uses (docs/emulator.md). Never `replace`.
    pub fn members(op: PatchOpKind, user_ids: &[&str]) -> Self {
        let value = user_ids
            .iter()
            .map(|id| serde_json::json!({ "value": id }))
            .collect::<Vec<_>>();
        Self::new(vec![PatchOperation {
            op,
            path: Some("members".to_owned()),
            value: Some(Value::Array(value)),
        }])
    }
}

/// One PATCH operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchOperation {
    pub op: PatchOpKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// PATCH `op`. Serialised lowercase; parsed case-insensitively because Entra sends
/// `Replace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchOpKind {
    Add,
    Remove,
    Replace,
}

impl<'de> Deserialize<'de> for PatchOpKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.to_ascii_lowercase().as_str() {
            "add" => Ok(Self::Add),
            "remove" => Ok(Self::Remove),
            "replace" => Ok(Self::Replace),
            _ => Err(serde::de::Error::unknown_variant(
                &text,
                &["add", "remove", "replace"],
            )),
        }
    }
}

/// An error body, parsed leniently: AWS sends `schema` (sic) and/or `schemas`, `status` as
/// a string, `exceptionRequestId`, `timeStamp`, and no `scimType` (docs/emulator.md). Every field
/// is optional so an odd body still yields whatever it has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScimErrorBody {
    /// AWS's misspelt key, kept apart so we can tell the two apart in tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<Vec<String>>,
    /// The HTTP status as AWS wrote it: string (`"409"`) or number.
    #[serde(
        default,
        deserialize_with = "lenient_status",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// RFC 7644 §3.12; AWS has not been seen to send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scim_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_request_id: Option<String>,
    /// `YYYY-MM-DD HH:MM:SS.mmm` on AWS; kept as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_stamp: Option<String>,
    /// Some gateways answer `{"message": ...}` instead; used when `detail` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ScimErrorBody {
    /// The most useful human text in the body.
    pub fn best_detail(&self) -> Option<&str> {
        self.detail
            .as_deref()
            .or(self.message.as_deref())
            .filter(|d| !d.is_empty())
    }
}

/// Accepts `"409"`, `409`, `null` or anything else (which becomes `None` rather than
/// failing the whole body: the status line already tells us the status).
fn lenient_status<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        _ => None,
    })
}

/// RFC 7643 §5 ServiceProviderConfig, with the parts `test_connection` reports typed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProviderConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Supported>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterSupport>,
    #[serde(flatten)]
    pub extra: ExtraAttributes,
}

/// `{"supported": bool}` blocks of the ServiceProviderConfig.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Supported {
    #[serde(default)]
    pub supported: bool,
}

/// The `filter` block of the ServiceProviderConfig.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterSupport {
    #[serde(default)]
    pub supported: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// RFC 7643 §8.2, full user representation (with the enterprise extension of §8.3).
    const RFC7643_USER: &str = r#"{
      "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                  "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
      "id": "2819c223-7f76-453a-919d-413861904646",
      "externalId": "701984",
      "userName": "bjensen@example.com",
      "name": {
        "formatted": "Ms. Barbara J Jensen, III",
        "familyName": "Jensen",
        "givenName": "Barbara",
        "middleName": "Jane",
        "honorificPrefix": "Ms.",
        "honorificSuffix": "III"
      },
      "displayName": "Babs Jensen",
      "nickName": "Babs",
      "profileUrl": "https://login.example.com/bjensen",
      "emails": [
        {"value": "bjensen@example.com", "type": "work", "primary": true},
        {"value": "babs@jensen.org", "type": "home"}
      ],
      "addresses": [
        {"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood",
         "region": "CA", "postalCode": "91608", "country": "USA",
         "formatted": "100 Universal City Plaza\nHollywood, CA 91608 USA", "primary": true},
        {"type": "home", "streetAddress": "456 Hollywood Blvd", "locality": "Hollywood",
         "region": "CA", "postalCode": "91608", "country": "USA",
         "formatted": "456 Hollywood Blvd\nHollywood, CA 91608 USA"}
      ],
      "phoneNumbers": [
        {"value": "555-555-5555", "type": "work"},
        {"value": "555-555-4444", "type": "mobile"}
      ],
      "ims": [{"value": "someaimhandle", "type": "aim"}],
      "photos": [
        {"value": "https://photos.example.com/profilephoto/72930000000Ccne/F", "type": "photo"},
        {"value": "https://photos.example.com/profilephoto/72930000000Ccne/T", "type": "thumbnail"}
      ],
      "userType": "Employee",
      "title": "Tour Guide",
      "preferredLanguage": "en-US",
      "locale": "en-US",
      "timezone": "America/Los_Angeles",
      "active": true,
      "password": "t1meMa$heen",
      "groups": [
        {"value": "e9e30dba-f08f-4109-8486-d5c6a331660a",
         "$ref": "https://example.com/v2/Groups/e9e30dba-f08f-4109-8486-d5c6a331660a",
         "display": "Tour Guides"}
      ],
      "x509Certificates": [{"value": "MIIDQzCCAqygAwIBAgICEAAwDQYJKoZIhvcNAQEFBQAwTjELMAkGA1UEBhMCVVMx"}],
      "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
        "employeeNumber": "701984",
        "costCenter": "4130",
        "organization": "Universal Studios",
        "division": "Theme Park",
        "department": "Tour Operations",
        "manager": {
          "value": "26118915-6090-4610-87e4-49d8ca9f808d",
          "$ref": "../Users/26118915-6090-4610-87e4-49d8ca9f808d",
          "displayName": "John Smith"
        }
      },
      "meta": {
        "resourceType": "User",
        "created": "2010-01-23T04:56:22Z",
        "lastModified": "2011-05-13T04:42:34Z",
        "version": "W/\"a330bc54f0671c9\"",
        "location": "https://example.com/v2/Users/2819c223-7f76-453a-919d-413861904646"
      }
    }"#;

    /// The AWS developer guide's CreateUser request (docs/emulator.md).
    const AWS_CREATE_USER: &str = r#"{
      "externalId": "701984",
      "userName": "bjensen",
      "name": {"formatted": "Ms. Barbara J Jensen, III", "familyName": "Jensen", "givenName": "Barbara",
               "middleName": "Jane", "honorificPrefix": "Ms.", "honorificSuffix": "III"},
      "displayName": "Babs Jensen",
      "nickName": "Babs",
      "profileUrl": "https://login.example.com/bjensen",
      "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
      "addresses": [{"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood",
                     "region": "CA", "postalCode": "91608", "country": "USA",
                     "formatted": "100 Universal City Plaza Hollywood, CA 91608 USA", "primary": true}],
      "phoneNumbers": [{"value": "555-555-5555", "type": "work"}],
      "roles": [{"value": "Researcher", "type": "work", "primary": true}],
      "userType": "Employee", "title": "Tour Guide", "preferredLanguage": "en-US",
      "locale": "en-US", "timezone": "America/Los_Angeles", "active": true,
      "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
        "employeeNumber": "701984", "costCenter": "4130", "organization": "Universal Studios",
        "division": "Theme Park", "department": "Tour Operations",
        "manager": {"value": "9067729b3d-ee533c18-538a-4cd3-a572-63fb863ed734",
                    "$ref": "../Users/9067729b3d-ee533c18-538a-4cd3-a572-63fb863ed734"}
      }
    }"#;

    fn round_trip<T: Serialize + for<'de> Deserialize<'de>>(text: &str) -> (Value, T) {
        let original: Value = serde_json::from_str(text).unwrap();
        let typed: T = serde_json::from_value(original.clone()).unwrap();
        let back = serde_json::to_value(&typed).unwrap();
        assert_eq!(back, original, "round trip changed the document");
        (original, typed)
    }

    #[test]
    fn rfc7643_example_user_round_trips_unchanged() {
        let (_, user) = round_trip::<ScimUser>(RFC7643_USER);
        assert_eq!(user.user_name.as_deref(), Some("bjensen@example.com"));
        assert_eq!(user.emails.len(), 2);
        assert_eq!(
            user.enterprise
                .and_then(|e| e.manager)
                .and_then(|m| m.value),
            Some("26118915-6090-4610-87e4-49d8ca9f808d".to_owned())
        );
        // Unmodelled attributes survive in `extra`.
        assert!(user.extra.contains_key("ims"));
        assert!(user.extra.contains_key("x509Certificates"));
    }

    #[test]
    fn aws_create_user_example_round_trips_unchanged() {
        let (_, user) = round_trip::<ScimUser>(AWS_CREATE_USER);
        assert_eq!(
            user.name.as_ref().and_then(|n| n.given_name.as_deref()),
            Some("Barbara")
        );
        assert_eq!(user.roles.len(), 1);
        assert!(user.extra.is_empty(), "every AWS attribute is typed");
    }

    #[test]
    fn aws_group_examples_round_trip_with_and_without_members() {
        let created = r#"{"id":"9067729b3d-a2cfc8a5-f4ab-4443-9d7d-b32a9013c554","externalId":"701984",
          "meta":{"resourceType":"Group","created":"2020-04-06T16:48:19Z","lastModified":"2020-04-06T16:48:19Z"},
          "schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Group Bar"}"#;
        let (_, group) = round_trip::<ScimGroup>(created);
        assert_eq!(group.members, None);
        let listed = r#"{"id":"g1","displayName":"G","members":[]}"#;
        let (_, group) = round_trip::<ScimGroup>(listed);
        assert_eq!(group.members, Some(vec![]));
        let request = r#"{"externalId":"701984","displayName":"Group Bar",
          "members":[{"value":"u1","$ref":"../Users/u1","type":"User"}]}"#;
        round_trip::<ScimGroup>(request);
    }

    #[test]
    fn cursor_and_index_list_responses_both_parse() {
        let cursor = r#"{"itemsPerPage":1,"nextCursor":"abc+/=","schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
          "Resources":[{"id":"u1","userName":"a"}]}"#;
        let (_, page) = round_trip::<ListResponse<ScimUser>>(cursor);
        assert_eq!(page.next_cursor.as_deref(), Some("abc+/="));
        assert_eq!(page.resources.len(), 1);

        let index = r#"{"totalResults":0,"itemsPerPage":0,"startIndex":1,
          "schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"Resources":[]}"#;
        round_trip::<ListResponse<ScimGroup>>(index);

        let no_resources: ListResponse<ScimUser> =
            serde_json::from_str(r#"{"totalResults":0}"#).unwrap();
        assert!(no_resources.resources.is_empty());
    }

    #[test]
    fn member_patch_has_the_shape_aws_accepts() {
        let body = PatchRequest::members(PatchOpKind::Add, &["u1", "u2"]);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "schemas": [SCHEMA_PATCH_OP],
                "Operations": [{"op": "add", "path": "members",
                                "value": [{"value": "u1"}, {"value": "u2"}]}]
            })
        );
    }

    #[test]
    fn patch_op_names_parse_case_insensitively() {
        let op: PatchOperation =
            serde_json::from_str(r#"{"op":"Replace","path":"active","value":"false"}"#).unwrap();
        assert_eq!(op.op, PatchOpKind::Replace);
        assert!(serde_json::from_str::<PatchOperation>(r#"{"op":"move"}"#).is_err());
    }

    #[test]
    fn aws_error_envelope_with_schema_key_and_string_status_parses() {
        let body = r#"{"schema":["urn:ietf:params:scim:api:messages:2.0:Error"],
          "schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],
          "detail":"Refused to create a new, duplicate resource.",
          "status":"409",
          "exceptionRequestId":"81abca44-4ee3-47fa-b4d9-729908ef1dd9",
          "timeStamp":"2022-03-18 10:57:08.014"}"#;
        let parsed: ScimErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.status, Some(409));
        assert_eq!(
            parsed.best_detail(),
            Some("Refused to create a new, duplicate resource.")
        );
        assert_eq!(
            parsed.exception_request_id.as_deref(),
            Some("81abca44-4ee3-47fa-b4d9-729908ef1dd9")
        );
        assert_eq!(parsed.scim_type, None);
        assert_eq!(parsed.schema, Some(vec![SCHEMA_ERROR.to_owned()]));
    }

    #[test]
    fn early_aws_error_with_only_the_schema_key_parses() {
        let body = r#"{"schema":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"400",
          "detail":"Request is unparsable, syntactically incorrect, or violates schema."}"#;
        let parsed: ScimErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.status, Some(400));
        assert_eq!(parsed.schemas, None);
    }

    #[test]
    fn rfc_error_with_numeric_status_and_scim_type_parses() {
        let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],
          "scimType":"uniqueness","detail":"dup","status":409}"#;
        let parsed: ScimErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.status, Some(409));
        assert_eq!(parsed.scim_type.as_deref(), Some("uniqueness"));
    }

    #[test]
    fn error_body_with_odd_status_or_only_a_message_still_parses() {
        let parsed: ScimErrorBody =
            serde_json::from_str(r#"{"status":"teapot","message":"Too many requests"}"#).unwrap();
        assert_eq!(parsed.status, None);
        assert_eq!(parsed.best_detail(), Some("Too many requests"));
        let parsed: ScimErrorBody = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed.best_detail(), None);
    }

    #[test]
    fn aws_service_provider_config_parses() {
        let body = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
          "documentationUri":"https://docs.aws.amazon.com/x",
          "authenticationSchemes":[{"type":"oauthbearertoken","primary":true}],
          "patch":{"supported":true},
          "bulk":{"supported":false,"maxOperations":1,"maxPayloadSize":1048576},
          "filter":{"supported":true,"maxResults":50},
          "changePassword":{"supported":false},"sort":{"supported":false},"etag":{"supported":false}}"#;
        let (_, config) = round_trip::<ServiceProviderConfig>(body);
        assert_eq!(config.filter.and_then(|f| f.max_results), Some(50));
        assert_eq!(config.patch, Some(Supported { supported: true }));
    }
}
