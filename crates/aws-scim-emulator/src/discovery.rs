//! Bodies of the discovery endpoints, as documented by AWS.

use serde_json::{json, Value};

use super::{CORE_USER_URN, ENTERPRISE_USER_URN, GROUP_URN, LIST_RESPONSE_URN};

const SPC_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const SCHEMA_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
const RESOURCE_TYPE_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";

pub(crate) fn service_provider_config() -> Value {
    json!({
        "schemas": [SPC_URN],
        "documentationUri": "https://docs.aws.amazon.com/singlesignon/latest/userguide/manage-your-identity-source-idp.html",
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication scheme using the OAuth Bearer Token Standard",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "documentationUri": "https://docs.aws.amazon.com/singlesignon/latest/userguide/provision-automatically.html",
            "primary": true
        }],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 1, "maxPayloadSize": 1_048_576},
        "filter": {"supported": true, "maxResults": 50},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false}
    })
}

/// One schema attribute (RFC 7643 §7 shape).
struct A {
    name: &'static str,
    kind: &'static str,
    multi: bool,
    required: bool,
    case_exact: bool,
    unique: bool,
    sub: Vec<A>,
}

fn s(name: &'static str) -> A {
    A {
        name,
        kind: "string",
        multi: false,
        required: false,
        case_exact: false,
        unique: false,
        sub: Vec::new(),
    }
}

impl A {
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn unique(mut self) -> Self {
        self.unique = true;
        self
    }
    fn exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    fn kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }
    fn complex(mut self, multi: bool, sub: Vec<A>) -> Self {
        self.kind = "complex";
        self.multi = multi;
        self.sub = sub;
        self
    }
    fn json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "type": self.kind,
            "multiValued": self.multi,
            "description": "",
            "required": self.required,
            "caseExact": self.case_exact,
            "mutability": "readWrite",
            "returned": "default",
            "uniqueness": if self.unique { "server" } else { "none" },
        });
        if !self.sub.is_empty() {
            v["subAttributes"] = Value::Array(self.sub.iter().map(A::json).collect());
        }
        v
    }
}

fn multi_sub(extra: Vec<A>) -> Vec<A> {
    let mut v = extra;
    v.push(s("type"));
    v.push(s("primary").kind("boolean"));
    v
}

fn schema(id: &str, name: &str, description: &str, attributes: Vec<A>) -> Value {
    json!({
        "schemas": [SCHEMA_URN],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attributes.iter().map(A::json).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("/v2/Schemas/{id}")},
    })
}

fn user_schema() -> Value {
    schema(
        CORE_USER_URN,
        "User",
        "User Account",
        vec![
            s("userName").required().unique(),
            s("name").complex(
                false,
                vec![
                    s("formatted"),
                    s("familyName").required(),
                    s("givenName").required(),
                    s("middleName"),
                    s("honorificPrefix"),
                    s("honorificSuffix"),
                ],
            ),
            s("displayName").required(),
            s("nickName"),
            s("profileUrl").kind("reference"),
            s("title"),
            s("userType"),
            s("preferredLanguage"),
            s("locale"),
            s("timezone"),
            s("active").kind("boolean"),
            s("emails").complex(true, multi_sub(vec![s("value").unique()])),
            s("phoneNumbers").complex(true, multi_sub(vec![s("value")])),
            s("addresses").complex(
                true,
                multi_sub(vec![
                    s("formatted"),
                    s("streetAddress"),
                    s("locality"),
                    s("region"),
                    s("postalCode"),
                    s("country"),
                ]),
            ),
            s("roles").complex(true, multi_sub(vec![s("value")])),
            s("externalId").exact().unique(),
        ],
    )
}

fn enterprise_schema() -> Value {
    schema(
        ENTERPRISE_USER_URN,
        "EnterpriseUser",
        "Enterprise User",
        vec![
            s("employeeNumber"),
            s("costCenter"),
            s("organization"),
            s("division"),
            s("department"),
            s("manager").complex(false, vec![s("value").exact()]),
        ],
    )
}

fn group_schema() -> Value {
    schema(
        GROUP_URN,
        "Group",
        "Group",
        vec![
            s("displayName").required().unique(),
            s("members").complex(
                true,
                vec![s("value").exact(), s("$ref").kind("reference"), s("type")],
            ),
            s("externalId").exact(),
        ],
    )
}

pub(crate) fn schemas() -> Vec<Value> {
    vec![user_schema(), enterprise_schema(), group_schema()]
}

pub(crate) fn schema_by_urn(urn: &str) -> Option<Value> {
    schemas().into_iter().find(|s| {
        s["id"]
            .as_str()
            .is_some_and(|id| id.eq_ignore_ascii_case(urn))
    })
}

pub(crate) fn resource_types() -> Vec<Value> {
    vec![
        json!({
            "schemas": [RESOURCE_TYPE_URN],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "User Account",
            "schema": CORE_USER_URN,
            "schemaExtensions": [{"schema": ENTERPRISE_USER_URN, "required": true}],
            "meta": {"resourceType": "ResourceType", "location": "/v2/ResourceTypes/User"},
        }),
        json!({
            "schemas": [RESOURCE_TYPE_URN],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Group",
            "schema": GROUP_URN,
            "schemaExtensions": [],
            "meta": {"resourceType": "ResourceType", "location": "/v2/ResourceTypes/Group"},
        }),
    ]
}

/// A non-paged ListResponse.
pub(crate) fn list(resources: Vec<Value>) -> Value {
    json!({
        "totalResults": resources.len(),
        "itemsPerPage": resources.len(),
        "startIndex": 1,
        "schemas": [LIST_RESPONSE_URN],
        "Resources": resources,
    })
}
