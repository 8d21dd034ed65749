//! /Users

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};

use super::{json_body, visible, ScimResult};
use crate::errors::ApiError;
use crate::filter::{self, UserFilter};
use crate::paging;
use crate::patch;
use crate::store::Store;
use crate::validate;
use crate::{EmulatorSettings, Shared};

pub(super) async fn create(
    shared: web::Data<Shared>,
    req: HttpRequest,
    body: web::Bytes,
) -> ScimResult {
    let input = json_body(&req, &body)?;
    let settings = shared.settings();
    let attrs = validate::canonical_user(&input, &settings)?;
    let mut store = shared.store();
    if store.user_conflicts(&attrs, None, &settings) {
        return Err(ApiError::duplicate());
    }
    let user = store.insert_user(attrs, &settings);
    Ok(HttpResponse::Created().json(user.render()))
}

pub(super) async fn get(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ScimResult {
    let (_, id) = path.into_inner();
    let store = shared.store();
    let user = store
        .user(&id)
        .filter(|u| visible(&req, u.born))
        .ok_or_else(ApiError::user_not_found)?;
    Ok(HttpResponse::Ok().json(user.render()))
}

pub(super) async fn list(shared: web::Data<Shared>, req: HttpRequest) -> ScimResult {
    let params = paging::list_params(req.query_string())?;
    let filter = filter::user_filter(params.filter.as_deref())?;
    let settings = shared.settings();
    let store = shared.store();
    let items: Vec<_> = match &filter {
        UserFilter::All => store.users().collect(),
        UserFilter::UserName(name) => store.find_user_by_name(name, &settings).collect(),
        UserFilter::ExternalId(x) => store
            .users()
            .filter(|u| u.external_id() == Some(x.as_str()))
            .collect(),
        // The group's members, in creation order: a page of a large group costs its members, not
        // every user.
        UserFilter::GroupsValue(group_id) => match store.group(group_id) {
            Some(group) => {
                let mut members: Vec<_> = group
                    .members
                    .iter()
                    .filter_map(|id| store.user(id))
                    .collect();
                members.sort_by_key(|u| u.seq);
                members
            }
            None if settings.unknown_filter_reference_not_found => {
                return Err(ApiError::group_not_found())
            }
            None => Vec::new(),
        },
        UserFilter::Id(id) => store.user(id).into_iter().collect(),
        UserFilter::IdAndManager { id, manager } => store
            .user(id)
            .filter(|u| u.manager_id() == Some(manager.as_str()))
            .into_iter()
            .collect(),
    };
    let items = items.into_iter().map(|u| (u.seq, u)).collect();
    let page = paging::page("Users", items, &params, |u| u.render())?;
    Ok(HttpResponse::Ok().json(page))
}

pub(super) async fn put(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ScimResult {
    let (_, id) = path.into_inner();
    let input = json_body(&req, &body)?;
    let settings = shared.settings();
    let attrs = validate::canonical_user(&input, &settings)?;
    let mut store = shared.store();
    if !store.user(&id).is_some_and(|u| visible(&req, u.born)) {
        return Err(ApiError::user_not_found());
    }
    store_user_attrs(&mut store, &id, attrs, &settings)
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
    let mut store = shared.store();
    let current = store
        .user(&id)
        .filter(|u| visible(&req, u.born))
        .ok_or_else(ApiError::user_not_found)?;
    let attrs = patch::patch_user(&current.attrs, &ops, &settings)?;
    store_user_attrs(&mut store, &id, attrs, &settings)
}

/// Replaces a visible user's attributes (PUT and PATCH end alike): uniqueness against the others,
/// then 200 with the stored user.
fn store_user_attrs(
    store: &mut Store,
    id: &str,
    attrs: Map<String, Value>,
    settings: &EmulatorSettings,
) -> ScimResult {
    if store.user_conflicts(&attrs, Some(id), settings) {
        return Err(ApiError::duplicate());
    }
    let user = store
        .replace_user_attrs(id, attrs)
        .ok_or_else(ApiError::user_not_found)?;
    Ok(HttpResponse::Ok().json(user.render()))
}

pub(super) async fn delete(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ScimResult {
    let (_, id) = path.into_inner();
    let mut store = shared.store();
    if !store.user(&id).is_some_and(|u| visible(&req, u.born)) {
        return Err(ApiError::user_not_found());
    }
    store.remove_user(&id);
    Ok(HttpResponse::NoContent().finish())
}
