//! PATCH requests: parsing the operations and applying them to users and groups.

use serde_json::{Map, Value};

use super::errors::ApiError;
use super::settings::EmulatorSettings;
use super::validate::{self, attr, MAX_MEMBER_CHANGES};
use super::ENTERPRISE_USER_URN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Add,
    Replace,
    Remove,
}

#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub kind: OpKind,
    pub path: Option<String>,
    pub value: Option<Value>,
}

/// Parses the `Operations` of a PatchOp body and checks the per-operation rules
/// (`path` required for remove, `value` for add/replace).
pub(crate) fn operations(body: &Value, settings: &EmulatorSettings) -> Result<Vec<Op>, ApiError> {
    let obj = body.as_object().ok_or_else(ApiError::unparsable)?;
    let Some(Value::Array(raw_ops)) = attr(obj, "Operations") else {
        return Err(ApiError::constraint(
            "Operations",
            "Member must not be null",
        ));
    };
    if raw_ops.is_empty() {
        return Err(ApiError::constraint(
            "Operations",
            "Member must have length greater than or equal to 1",
        ));
    }
    raw_ops
        .iter()
        .map(|raw| {
            let op = raw.as_object().ok_or_else(ApiError::unparsable)?;
            let name = attr(op, "op")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::constraint("op", "Member must not be null"))?;
            let folded = if settings.case_insensitive_ops {
                name.to_ascii_lowercase()
            } else {
                name.to_owned()
            };
            let kind = match folded.as_str() {
                "add" => OpKind::Add,
                "replace" => OpKind::Replace,
                "remove" => OpKind::Remove,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "Unsupported operation: op '{name}'."
                    )))
                }
            };
            let path = match attr(op, "path") {
                None => None,
                Some(Value::String(p)) if !p.trim().is_empty() => Some(p.trim().to_owned()),
                Some(_) => {
                    return Err(ApiError::constraint(
                        "path",
                        "Member must be a non-empty string",
                    ))
                }
            };
            let value = attr(op, "value").cloned();
            if kind == OpKind::Remove && path.is_none() {
                return Err(ApiError::constraint(
                    "path",
                    "Member must not be null for op remove",
                ));
            }
            if kind != OpKind::Remove && value.is_none() {
                return Err(ApiError::constraint(
                    "value",
                    "Member must not be null for op add/replace",
                ));
            }
            Ok(Op { kind, path, value })
        })
        .collect()
}

/// `attr eq value` inside `[...]`; the value may be quoted or a bare literal.
fn bracket_filter(inner: &str) -> Result<(String, String), ApiError> {
    let mut parts = inner.trim().splitn(3, ' ');
    let (Some(a), Some(op), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ApiError::unparsable());
    };
    if !op.eq_ignore_ascii_case("eq") {
        return Err(ApiError::bad_request(format!(
            "Unsupported filter: operator '{op}' in path (only 'eq' is supported)"
        )));
    }
    let v = v.trim();
    let value = match v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(q) => q.replace("\\\"", "\""),
        None => v.to_owned(),
    };
    Ok((a.to_owned(), value))
}

// ---------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Simple,
    Complex,
    Multi,
    /// The whole enterprise extension object.
    Extension,
}

const CORE_SIMPLE: &[&str] = &[
    "userName",
    "active",
    "externalId",
    "displayName",
    "nickName",
    "profileUrl",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
];
const CORE_MULTI: &[&str] = &["emails", "addresses", "phoneNumbers"];
const EXT_SIMPLE: &[&str] = &[
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
    "department",
];

#[derive(Debug)]
struct UserPath {
    ext: bool,
    attr: &'static str,
    shape: Shape,
    filter: Option<(String, String)>,
    sub: Option<String>,
}

fn canonical_name(name: &str, list: &[&'static str]) -> Option<&'static str> {
    list.iter().copied().find(|a| a.eq_ignore_ascii_case(name))
}

fn parse_user_path(path: &str) -> Result<UserPath, ApiError> {
    let urn_len = ENTERPRISE_USER_URN.len();
    let is_urn = path
        .get(..urn_len)
        .is_some_and(|p| p.eq_ignore_ascii_case(ENTERPRISE_USER_URN));
    if is_urn && path.len() == urn_len {
        return Ok(UserPath {
            ext: true,
            attr: "",
            shape: Shape::Extension,
            filter: None,
            sub: None,
        });
    }
    let (ext, rest) = match path.get(urn_len..) {
        Some(tail) if is_urn && tail.starts_with(':') => (true, &tail[1..]),
        _ => (false, path),
    };
    let name_end = rest.find(['[', '.']).unwrap_or(rest.len());
    let name = &rest[..name_end];
    let mut tail = &rest[name_end..];
    let mut filter = None;
    if let Some(after_open) = tail.strip_prefix('[') {
        let close = after_open.find(']').ok_or_else(ApiError::unparsable)?;
        filter = Some(bracket_filter(&after_open[..close])?);
        tail = &after_open[close + 1..];
    }
    let sub = match tail.strip_prefix('.') {
        Some(s) if !s.is_empty() => Some(s.to_owned()),
        Some(_) => return Err(ApiError::unparsable()),
        None if tail.is_empty() => None,
        None => return Err(ApiError::unparsable()),
    };
    let not_modifiable = || ApiError::bad_request(format!("Attribute {path} cannot be modified."));
    let (attr, shape) = if ext {
        if let Some(a) = canonical_name(name, EXT_SIMPLE) {
            (a, Shape::Simple)
        } else if name.eq_ignore_ascii_case("manager") {
            ("manager", Shape::Complex)
        } else {
            return Err(not_modifiable());
        }
    } else if let Some(a) = canonical_name(name, CORE_SIMPLE) {
        (a, Shape::Simple)
    } else if let Some(a) = canonical_name(name, CORE_MULTI) {
        (a, Shape::Multi)
    } else if name.eq_ignore_ascii_case("name") {
        ("name", Shape::Complex)
    } else {
        return Err(not_modifiable());
    };
    if shape != Shape::Multi && filter.is_some() {
        return Err(ApiError::unparsable());
    }
    if shape == Shape::Simple && sub.is_some() {
        return Err(ApiError::unparsable());
    }
    Ok(UserPath {
        ext,
        attr,
        shape,
        filter,
        sub,
    })
}

/// Sets `key` in `obj`, replacing any differently-cased spelling.
fn set_key(obj: &mut Map<String, Value>, key: &str, value: Value) {
    obj.retain(|k, _| !k.eq_ignore_ascii_case(key));
    obj.insert(key.to_owned(), value);
}

fn remove_key(obj: &mut Map<String, Value>, key: &str) {
    obj.retain(|k, _| !k.eq_ignore_ascii_case(key));
}

fn object_at<'a>(
    obj: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Map<String, Value>, ApiError> {
    let existing = obj.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned();
    let key = existing.unwrap_or_else(|| key.to_owned());
    let slot = obj.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().ok_or_else(ApiError::unparsable)
}

fn element_matches(element: &Value, filter: &(String, String)) -> bool {
    let Some(obj) = element.as_object() else {
        return false;
    };
    match attr(obj, &filter.0) {
        Some(Value::String(s)) => s.eq_ignore_ascii_case(&filter.1),
        Some(Value::Bool(b)) => b.to_string().eq_ignore_ascii_case(&filter.1),
        _ => false,
    }
}

fn filter_value(filter: &(String, String)) -> Value {
    if filter.0.eq_ignore_ascii_case("primary") {
        Value::Bool(filter.1.eq_ignore_ascii_case("true"))
    } else {
        Value::String(filter.1.clone())
    }
}

fn merge_into(target: &mut Map<String, Value>, value: &Value) -> Result<(), ApiError> {
    let obj = value.as_object().ok_or_else(ApiError::unparsable)?;
    for (k, v) in obj {
        set_key(target, k, v.clone());
    }
    Ok(())
}

fn apply_multi(
    container: &mut Map<String, Value>,
    kind: OpKind,
    path: &UserPath,
    value: Option<&Value>,
) -> Result<(), ApiError> {
    let mut list: Vec<Value> = match attr(container, path.attr) {
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(ApiError::unparsable()),
        None => Vec::new(),
    };
    let value_or_err = || value.ok_or_else(ApiError::unparsable);
    match (&path.filter, &path.sub, kind) {
        (None, None, OpKind::Add) => match value_or_err()? {
            Value::Array(items) => list.extend(items.iter().cloned()),
            v @ Value::Object(_) => list.push(v.clone()),
            _ => return Err(ApiError::unparsable()),
        },
        (None, None, OpKind::Replace) => {
            list = match value_or_err()? {
                Value::Array(items) => items.clone(),
                v @ Value::Object(_) => vec![v.clone()],
                _ => return Err(ApiError::unparsable()),
            }
        }
        (None, None, OpKind::Remove) => match value {
            Some(Value::Array(items)) => {
                let gone: Vec<&Value> = items.iter().filter_map(|i| i.get("value")).collect();
                list.retain(|e| e.get("value").is_none_or(|v| !gone.contains(&v)));
            }
            _ => list.clear(),
        },
        (None, Some(sub), OpKind::Remove) => {
            for e in list.iter_mut().filter_map(Value::as_object_mut) {
                remove_key(e, sub);
            }
        }
        (None, Some(sub), _) => {
            if list.is_empty() {
                list.push(Value::Object(Map::new()));
            }
            for e in &mut list {
                let e = e.as_object_mut().ok_or_else(ApiError::unparsable)?;
                set_key(e, sub, value_or_err()?.clone());
            }
        }
        (Some(filter), sub, OpKind::Remove) => match sub {
            None => list.retain(|e| !element_matches(e, filter)),
            Some(sub) => {
                for e in list.iter_mut().filter(|e| element_matches(e, filter)) {
                    if let Some(e) = e.as_object_mut() {
                        remove_key(e, sub);
                    }
                }
            }
        },
        (Some(filter), sub, _) => {
            let v = value_or_err()?;
            if !list.iter().any(|e| element_matches(e, filter)) {
                let mut fresh = Map::new();
                fresh.insert(filter.0.clone(), filter_value(filter));
                list.push(Value::Object(fresh));
            }
            for e in list.iter_mut().filter(|e| element_matches(e, filter)) {
                let e = e.as_object_mut().ok_or_else(ApiError::unparsable)?;
                match sub {
                    Some(sub) => set_key(e, sub, v.clone()),
                    None => merge_into(e, v)?,
                }
            }
        }
    }
    if list.is_empty() {
        remove_key(container, path.attr);
    } else {
        set_key(container, path.attr, Value::Array(list));
    }
    Ok(())
}

fn apply_user_op(
    doc: &mut Map<String, Value>,
    kind: OpKind,
    path: &UserPath,
    value: Option<&Value>,
) -> Result<(), ApiError> {
    if path.shape == Shape::Extension {
        return match kind {
            OpKind::Remove => {
                remove_key(doc, ENTERPRISE_USER_URN);
                Ok(())
            }
            _ => merge_into(
                object_at(doc, ENTERPRISE_USER_URN)?,
                value.ok_or_else(ApiError::unparsable)?,
            ),
        };
    }
    let container: &mut Map<String, Value> = if path.ext {
        if kind == OpKind::Remove && attr(doc, ENTERPRISE_USER_URN).is_none() {
            return Ok(());
        }
        object_at(doc, ENTERPRISE_USER_URN)?
    } else {
        doc
    };
    let value_or_err = || value.ok_or_else(ApiError::unparsable);
    match path.shape {
        Shape::Simple => match kind {
            OpKind::Remove => remove_key(container, path.attr),
            _ => set_key(container, path.attr, value_or_err()?.clone()),
        },
        Shape::Complex => match (&path.sub, kind) {
            (Some(sub), OpKind::Remove) => {
                if attr(container, path.attr).is_some() {
                    remove_key(object_at(container, path.attr)?, sub);
                }
            }
            (Some(sub), _) => set_key(
                object_at(container, path.attr)?,
                sub,
                value_or_err()?.clone(),
            ),
            (None, OpKind::Remove) => remove_key(container, path.attr),
            (None, _) => match value_or_err()? {
                Value::String(s) if path.attr == "manager" => {
                    let mut m = Map::new();
                    m.insert("value".to_owned(), Value::String(s.clone()));
                    set_key(container, "manager", Value::Object(m));
                }
                v => merge_into(object_at(container, path.attr)?, v)?,
            },
        },
        Shape::Multi => apply_multi(container, kind, path, value)?,
        Shape::Extension => {}
    }
    Ok(())
}

/// Applies user PATCH operations to the canonical attributes `current` and returns the new,
/// validated canonical attributes.
pub(crate) fn patch_user(
    current: &Map<String, Value>,
    ops: &[Op],
    settings: &EmulatorSettings,
) -> Result<Map<String, Value>, ApiError> {
    let mut doc = current.clone();
    let mut user_name_ops = 0;
    let mut active_ops = 0;
    let mut count = |p: &UserPath| {
        if !p.ext && p.attr == "userName" {
            user_name_ops += 1;
        }
        if !p.ext && p.attr == "active" {
            active_ops += 1;
        }
    };
    for op in ops {
        let mut targets: Vec<(UserPath, Option<Value>)> = Vec::new();
        match &op.path {
            Some(path) => targets.push((parse_user_path(path)?, op.value.clone())),
            None => {
                if !settings.user_patch_without_path {
                    return Err(ApiError::bad_request(
                        "Each operation must name the attribute it changes in 'path'.",
                    ));
                }
                let obj = op
                    .value
                    .as_ref()
                    .and_then(Value::as_object)
                    .ok_or_else(ApiError::unparsable)?;
                for (k, v) in obj {
                    if k.eq_ignore_ascii_case(ENTERPRISE_USER_URN) {
                        let ext = v.as_object().ok_or_else(ApiError::unparsable)?;
                        for (k2, v2) in ext {
                            let p = parse_user_path(&format!("{ENTERPRISE_USER_URN}:{k2}"))?;
                            targets.push((p, Some(v2.clone())));
                        }
                    } else if ["schemas", "id", "meta"]
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(k))
                    {
                        continue;
                    } else {
                        targets.push((parse_user_path(k)?, Some(v.clone())));
                    }
                }
            }
        }
        for (path, value) in &targets {
            count(path);
            if op.kind == OpKind::Remove && !path.ext && matches!(path.attr, "userName" | "active")
            {
                return Err(ApiError::bad_request(format!(
                    "Unsupported operation: remove on {}.",
                    path.attr
                )));
            }
            apply_user_op(&mut doc, op.kind, path, value.as_ref())?;
        }
    }
    if user_name_ops > 1 || active_ops > 1 {
        return Err(ApiError::bad_request(
            "Unsupported operation: more than one operation on userName or active in one request.",
        ));
    }
    validate::canonical_user(&Value::Object(doc), settings)
}

// ---------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupOp {
    DisplayName(String),
    ExternalId(Option<String>),
    AddMembers(Vec<String>),
    RemoveMembers(Vec<String>),
}

fn members_op(kind: OpKind, value: Option<&Value>) -> Result<GroupOp, ApiError> {
    match kind {
        OpKind::Replace => Err(ApiError::unsupported("replace on group members")),
        OpKind::Add => Ok(GroupOp::AddMembers(validate::member_values(value)?)),
        OpKind::Remove => Ok(GroupOp::RemoveMembers(validate::member_values(value)?)),
    }
}

/// Turns group PATCH operations into group changes, enforcing the 100-change cap.
pub(crate) fn group_ops(
    ops: &[Op],
    group_id: &str,
    settings: &EmulatorSettings,
) -> Result<Vec<GroupOp>, ApiError> {
    let mut out = Vec::new();
    for op in ops {
        match &op.path {
            Some(path) => {
                let lower = path.to_ascii_lowercase();
                if lower == "displayname" {
                    if op.kind == OpKind::Remove {
                        return Err(ApiError::unsupported("remove on displayName"));
                    }
                    let v = op.value.as_ref().ok_or_else(ApiError::unparsable)?;
                    out.push(GroupOp::DisplayName(validate::group_display_name(
                        v, settings,
                    )?));
                } else if lower == "externalid" {
                    match (op.kind, &op.value) {
                        (OpKind::Remove, _) => out.push(GroupOp::ExternalId(None)),
                        (_, Some(v)) => out.push(GroupOp::ExternalId(Some(validate::external_id(
                            v, settings,
                        )?))),
                        (_, None) => return Err(ApiError::unparsable()),
                    }
                } else if lower == "members" {
                    out.push(members_op(op.kind, op.value.as_ref())?);
                } else if let Some(inner) = lower
                    .strip_prefix("members[")
                    .and_then(|_| path.get("members[".len()..))
                    .and_then(|rest| rest.strip_suffix(']'))
                {
                    let (a, v) = bracket_filter(inner)?;
                    if op.kind != OpKind::Remove || !a.eq_ignore_ascii_case("value") || v.is_empty()
                    {
                        return Err(ApiError::unsupported(
                            &format!("{:?} on {path}", op.kind).to_lowercase(),
                        ));
                    }
                    out.push(GroupOp::RemoveMembers(vec![v]));
                } else {
                    return Err(ApiError::bad_request(format!(
                        "Attribute {path} cannot be modified."
                    )));
                }
            }
            None => {
                let obj = op
                    .value
                    .as_ref()
                    .and_then(Value::as_object)
                    .ok_or_else(ApiError::unparsable)?;
                for (k, v) in obj {
                    if k.eq_ignore_ascii_case("id") {
                        if v.as_str() != Some(group_id) {
                            return Err(ApiError::bad_request(
                                "The id in the value does not match the group.",
                            ));
                        }
                    } else if k.eq_ignore_ascii_case("displayName") {
                        out.push(GroupOp::DisplayName(validate::group_display_name(
                            v, settings,
                        )?));
                    } else if k.eq_ignore_ascii_case("externalId") {
                        out.push(GroupOp::ExternalId(Some(validate::external_id(
                            v, settings,
                        )?)));
                    } else if k.eq_ignore_ascii_case("members") {
                        out.push(members_op(op.kind, Some(v))?);
                    } else if !k.eq_ignore_ascii_case("schemas") {
                        return Err(ApiError::bad_request(format!(
                            "Attribute {k} cannot be modified."
                        )));
                    }
                }
            }
        }
    }
    let changes: usize = out
        .iter()
        .map(|op| match op {
            GroupOp::AddMembers(m) | GroupOp::RemoveMembers(m) => m.len(),
            _ => 0,
        })
        .sum();
    if changes > MAX_MEMBER_CHANGES {
        return Err(ApiError::bad_request(format!(
            "{} At most {MAX_MEMBER_CHANGES} membership changes are allowed per request.",
            super::errors::UNPARSABLE
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Map<String, Value> {
        let doc = json!({
            "userName": "alice", "name": {"givenName": "Alice", "familyName": "L"}, "displayName": "Alice L",
            "emails": [{"value": "a@example.com", "type": "work", "primary": true}],
        });
        validate::canonical_user(&doc, &EmulatorSettings::default()).unwrap_or_default()
    }

    fn ops(v: Value) -> Vec<Op> {
        operations(&json!({"Operations": v}), &EmulatorSettings::default()).unwrap_or_default()
    }

    #[test]
    fn filtered_email_value_paths_change_the_matching_email() {
        let s = EmulatorSettings::default();
        let out = patch_user(
            &user(),
            &ops(
                json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "b@example.com"}]),
            ),
            &s,
        );
        assert_eq!(
            out.map(|u| u["emails"][0]["value"].clone()),
            Ok(json!("b@example.com"))
        );
    }

    #[test]
    fn enterprise_paths_and_string_active_are_applied() {
        let s = EmulatorSettings::default();
        let out = patch_user(
            &user(),
            &ops(json!([
                {"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Ops"},
                {"op": "replace", "path": "active", "value": "False"},
                {"op": "replace", "path": "name.givenName", "value": "Alicia"},
            ])),
            &s,
        )
        .unwrap_or_default();
        assert_eq!(out[ENTERPRISE_USER_URN]["department"], json!("Ops"));
        assert_eq!(out["active"], json!(false));
        assert_eq!(out["name"]["givenName"], json!("Alicia"));
        assert_eq!(out["name"]["familyName"], json!("L"));
    }

    #[test]
    fn adding_a_second_email_is_refused() {
        let s = EmulatorSettings::default();
        let out = patch_user(
            &user(),
            &ops(
                json!([{"op": "add", "path": "emails", "value": [{"value": "c@example.com", "primary": true}]}]),
            ),
            &s,
        );
        assert!(out.is_err_and(|e| e.detail.contains("exceeds allowed limit of 1")));
    }

    #[test]
    fn filtered_member_remove_counts_as_one_change() {
        let s = EmulatorSettings::default();
        let out = group_ops(
            &ops(json!([{"op": "remove", "path": "members[value eq \"u1\"]"}])),
            "g",
            &s,
        );
        assert_eq!(out, Ok(vec![GroupOp::RemoveMembers(vec!["u1".into()])]));
    }
}
