//! /Groups

use actix_web::{web, HttpRequest, HttpResponse};

use super::{json_body, visible, ScimResult};
use crate::errors::ApiError;
use crate::filter::{self, GroupFilter};
use crate::paging;
use crate::patch::{self, GroupOp};
use crate::settings::RedundantMemberChange;
use crate::store::Store;
use crate::validate;
use crate::{clock, Shared};

fn redundant(kind: RedundantMemberChange) -> Result<(), ApiError> {
    match kind {
        RedundantMemberChange::NoOp => Ok(()),
        RedundantMemberChange::Conflict => Err(ApiError::duplicate()),
        RedundantMemberChange::NotFound => Err(ApiError::member_not_found()),
        RedundantMemberChange::BadRequest => Err(ApiError::unparsable()),
    }
}

/// True when `user_id` names a user visible to this request.
fn user_visible(store: &Store, req: &HttpRequest, user_id: &str) -> bool {
    store.user(user_id).is_some_and(|u| visible(req, u.born))
}

pub(super) async fn create(
    shared: web::Data<Shared>,
    req: HttpRequest,
    body: web::Bytes,
) -> ScimResult {
    let input = json_body(&req, &body)?;
    let settings = shared.settings();
    let group = validate::group_input(&input, &settings)?;
    let mut store = shared.store();
    if store.group_name_taken(&group.display_name, None, &settings) {
        return Err(ApiError::duplicate());
    }
    if settings.reject_unknown_members
        && !group.members.iter().all(|m| user_visible(&store, &req, m))
    {
        return Err(ApiError::member_not_found());
    }
    let created = store.insert_group(
        group.display_name,
        group.external_id,
        group.members,
        &settings,
    );
    Ok(HttpResponse::Created().json(created.render(false)))
}

pub(super) async fn get(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ScimResult {
    let (_, id) = path.into_inner();
    let store = shared.store();
    let group = store
        .group(&id)
        .filter(|g| visible(&req, g.born))
        .ok_or_else(ApiError::group_not_found)?;
    Ok(HttpResponse::Ok().json(group.render(false)))
}

pub(super) async fn list(shared: web::Data<Shared>, req: HttpRequest) -> ScimResult {
    let params = paging::list_params(req.query_string())?;
    let settings = shared.settings();
    let filter = filter::group_filter(params.filter.as_deref(), &settings)?;
    let store = shared.store();
    let items: Vec<_> = match &filter {
        GroupFilter::All => store.groups().collect(),
        GroupFilter::DisplayName(name) => store
            .groups_named(name, settings.group_name_case_insensitive)
            .collect(),
        GroupFilter::ExternalId(x) => store
            .groups()
            .filter(|g| g.external_id.as_deref() == Some(x.as_str()))
            .collect(),
        GroupFilter::MembersValue(user_id) => {
            if settings.unknown_filter_reference_not_found && store.user(user_id).is_none() {
                return Err(ApiError::member_not_found());
            }
            store
                .groups()
                .filter(|g| g.members.contains(user_id))
                .collect()
        }
        GroupFilter::Id(id) => store.group(id).into_iter().collect(),
        GroupFilter::IdAndMembers { id, member } => {
            if store.user(member).is_none() {
                return Err(ApiError::member_not_found());
            }
            store
                .group(id)
                .filter(|g| g.members.contains(member))
                .into_iter()
                .collect()
        }
    };
    let items = items.into_iter().map(|g| (g.seq, g)).collect();
    let page = paging::page("Groups", items, &params, |g| g.render(true))?;
    Ok(HttpResponse::Ok().json(page))
}

pub(super) async fn patch(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ScimResult {
    let (_, id) = path.into_inner();
    let input = json_body(&req, &body)?;
    let settings = shared.settings();
    let ops = patch::operations(&input, &settings)?;
    let changes = patch::group_ops(&ops, &id, &settings)?;
    let mut store = shared.store();
    let mut working = store
        .group(&id)
        .filter(|g| visible(&req, g.born))
        .cloned()
        .ok_or_else(ApiError::group_not_found)?;
    for change in changes {
        match change {
            GroupOp::DisplayName(name) => {
                if store.group_name_taken(&name, Some(&id), &settings) {
                    return Err(ApiError::duplicate());
                }
                working.display_name = name;
            }
            GroupOp::ExternalId(external_id) => working.external_id = external_id,
            GroupOp::AddMembers(members) => {
                for member in members {
                    if working.members.contains(&member) {
                        redundant(settings.duplicate_member_add)?;
                    } else if settings.reject_unknown_members
                        && !user_visible(&store, &req, &member)
                    {
                        return Err(ApiError::member_not_found());
                    } else {
                        working.members.insert(member);
                    }
                }
            }
            GroupOp::RemoveMembers(members) => {
                for member in members {
                    if !working.members.remove(&member) {
                        redundant(settings.absent_member_remove)?;
                    }
                }
            }
        }
    }
    working.last_modified = clock::now();
    let group = store.group_mut(&id).ok_or_else(ApiError::group_not_found)?;
    *group = working;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) async fn delete(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ScimResult {
    let (_, id) = path.into_inner();
    let mut store = shared.store();
    if !store.group(&id).is_some_and(|g| visible(&req, g.born)) {
        return Err(ApiError::group_not_found());
    }
    store.remove_group(&id);
    Ok(HttpResponse::NoContent().finish())
}
