//! Behaviour switches of the emulator.
//!
//! Every point of AWS behaviour that its documentation leaves unconfirmed is a field here; the
//! default is the behaviour judged most likely for the real AWS endpoint.

use serde::{Deserialize, Serialize};

/// Tenant id used when none is configured (the example id from the AWS documentation).
pub const DEFAULT_TENANT_ID: &str = "kE3934e0444-9ba8-41e7-b468-2fecf5b4fa22";

/// Bearer token accepted when none is configured.
pub const DEFAULT_TOKEN: &str = "emulator-token";

/// What a group PATCH does with a membership change that changes nothing
/// (adding a present member, removing an absent one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RedundantMemberChange {
    /// Ignore it; the request still answers 204 (RFC 7644 behaviour, the default).
    NoOp,
    /// Answer 409 ConflictException and apply nothing.
    Conflict,
    /// Answer 404 ResourceNotFoundException and apply nothing.
    NotFound,
    /// Answer 400 ValidationException and apply nothing.
    BadRequest,
}

/// Emulator configuration. Construct with `EmulatorSettings::default()` and change fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EmulatorSettings {
    /// First path segment of the SCIM base URL. Any other value answers 401.
    pub tenant_id: String,
    /// Accepted bearer tokens (AWS allows two at a time; any number is accepted here).
    pub tokens: Vec<String>,
    /// Refuse tab, CR, LF, `"`, `<`, `>`, `;`, `:` and `%` in string attributes
    /// (all except `profileUrl`), as reported in practice. Default on.
    pub strict_characters: bool,
    /// Refuse the reserved names `Administrator` and `AWSAdministrators` as userName or
    /// group displayName (Identity Store rule; SCIM enforcement UNCONFIRMED). Default on.
    pub reserved_names: bool,
    /// userName uniqueness and `userName eq` matching ignore case (`caseExact: false`). Default on.
    pub user_name_case_insensitive: bool,
    /// Group displayName uniqueness and `displayName eq` matching ignore case. UNCONFIRMED;
    /// default on (the SCIM Group schema declares `caseExact: false`).
    pub group_name_case_insensitive: bool,
    /// PATCH `op` values are matched case-insensitively (`Replace`, as Entra sends). Default on.
    pub case_insensitive_ops: bool,
    /// Requests without a `User-Agent` header are refused with 403 AccessDeniedException.
    pub require_user_agent: bool,
    /// Adding a user who is already a member. Default: no-op (204).
    pub duplicate_member_add: RedundantMemberChange,
    /// Removing a user who is not a member. Default: no-op (204).
    pub absent_member_remove: RedundantMemberChange,
    /// A member id that names no user in POST /Groups or a PATCH `add` answers 404
    /// (UNCONFIRMED; matches the reports of 404 right after create). When off, unknown ids
    /// are stored as members anyway.
    pub reject_unknown_members: bool,
    /// `members.value eq "<unknown user>"` (groups) and `groups.value eq "<unknown group>"`
    /// (users) answer 404 like the documented `id eq .. and members eq ..` case. UNCONFIRMED;
    /// default on. When off they answer an empty list.
    pub unknown_filter_reference_not_found: bool,
    /// Accept `member eq` as an alias of `members eq` in group filters (the constraint text
    /// of the AWS doc says `member`). Default on.
    pub accept_member_filter_alias: bool,
    /// Accept user PATCH operations without `path` (value object of attributes).
    /// UNCONFIRMED; default off (a proxy author found AWS wanted one attribute per operation).
    pub user_patch_without_path: bool,
    /// Ids in the old `<10 hex>-<uuid>` form instead of a plain UUID. Default off.
    pub prefixed_ids: bool,
    /// Number of request-log entries kept (oldest dropped first).
    pub request_log_capacity: usize,
}

impl Default for EmulatorSettings {
    fn default() -> Self {
        Self {
            tenant_id: DEFAULT_TENANT_ID.to_owned(),
            tokens: vec![DEFAULT_TOKEN.to_owned()],
            strict_characters: true,
            reserved_names: true,
            user_name_case_insensitive: true,
            group_name_case_insensitive: true,
            case_insensitive_ops: true,
            require_user_agent: true,
            duplicate_member_add: RedundantMemberChange::NoOp,
            absent_member_remove: RedundantMemberChange::NoOp,
            reject_unknown_members: true,
            unknown_filter_reference_not_found: true,
            accept_member_filter_alias: true,
            user_patch_without_path: false,
            prefixed_ids: false,
            request_log_capacity: 10_000,
        }
    }
}

impl EmulatorSettings {
    /// The settings with tokens replaced by `[redacted]`, for display.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        copy.tokens = copy
            .tokens
            .iter()
            .map(|_| "[redacted]".to_owned())
            .collect();
        copy
    }
}
