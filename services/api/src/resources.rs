//! Generic CRUD for space-owned resources stored as documents: project groups, lifecycles,
//! environments and feeds (projects and channels reuse the same pieces with extra rules).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathParams, Principal, SpaceScope};
use crate::links::{links, space_prefix};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cuttle_domain::SpaceId;
use cuttle_domain::ids::{numeric_suffix, slugify};
use cuttle_store::documents::{self, Document, ListQuery, NewDocument, Replacement};
use cuttle_store::{ConnectionTrait, TransactionTrait};
use cuttle_wire::resources::{Environment, Feed, Lifecycle, ProjectGroup};
use cuttle_wire::{Collection, Links};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `id`, `name` and `set_links` of a resource whose wire type has `Id`, `Name` and `Links`.
macro_rules! resource_accessors {
    () => {
        fn id(&self) -> &str {
            &self.id
        }
        fn name(&self) -> &str {
            &self.name
        }
        fn set_links(&mut self, links: cuttle_wire::Links) {
            self.links = links;
        }
    };
}
pub(crate) use resource_accessors;

/// `assign` for a resource whose only server-set fields are `Id` and `SpaceId`.
macro_rules! resource_assign {
    () => {
        fn assign(&mut self, id: String, space: &cuttle_domain::SpaceId) {
            self.id = id;
            self.space_id = space.to_string();
        }
    };
}
pub(crate) use resource_assign;

/// A resource served by the generic handlers.
pub trait Resource: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static {
    /// Document kind and `ItemType`.
    const KIND: &'static str;
    /// Id prefix: `Environments` for `Environments-1`.
    const PREFIX: &'static str;
    /// Route segment: `environments`.
    const COLLECTION: &'static str;
    /// Lower-case noun for messages.
    const NOUN: &'static str;

    /// The id.
    fn id(&self) -> &str;
    /// Sets id and space on create.
    fn assign(&mut self, id: String, space: &SpaceId);
    /// The name.
    fn name(&self) -> &str;
    /// Links for output.
    fn links(&self, space: &SpaceId) -> Links;
    /// Stores links for output.
    fn set_links(&mut self, links: Links);
    /// List position; defaults to creation order.
    fn sort_order(&self, number: i64) -> i64 {
        number
    }
    /// Owner for cascading deletes.
    fn parent_id(&self) -> Option<String> {
        None
    }
    /// Normalises and validates input (the name is checked by the caller).
    fn prepare(&mut self) -> ApiResult<()> {
        Ok(())
    }
}

/// Validates and normalises the common `Name` field.
pub fn require_name(name: &str, noun: &str) -> ApiResult<String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid_field(
            "Name",
            format!("a {noun} name is required"),
        ));
    }
    if trimmed.chars().count() > 200 {
        return Err(ApiError::invalid_field(
            "Name",
            "must be 200 characters or fewer",
        ));
    }
    Ok(trimmed.to_owned())
}

/// The message for a name clash.
pub fn name_taken(noun: &str, name: &str) -> String {
    format!("Name: the name '{name}' is already in use by another {noun}.")
}

/// Reads a resource of this space and decorates it with links.
pub fn present<T: Resource>(doc: &Document, space: &SpaceId) -> ApiResult<T> {
    let mut value: T = documents::decode(doc)?;
    value.set_links(value.links(space));
    Ok(value)
}

/// Loads one resource by id, 404 when absent.
pub async fn load<T: Resource>(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    id: &str,
) -> ApiResult<(Document, T)> {
    let doc = documents::get(conn, space, T::KIND, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{} '{id}'", T::NOUN)))?;
    let value: T = documents::decode(&doc)?;
    Ok((doc, value))
}

/// Loads one resource by id or (case-insensitive) name.
pub async fn load_by_id_or_name<T: Resource>(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    id_or_name: &str,
) -> ApiResult<Option<(Document, T)>> {
    let doc = match documents::get(conn, space, T::KIND, id_or_name).await? {
        Some(doc) => Some(doc),
        None => documents::find_by_name(conn, space, T::KIND, None, id_or_name).await?,
    };
    match doc {
        Some(doc) => {
            let value = documents::decode(&doc)?;
            Ok(Some((doc, value)))
        }
        None => Ok(None),
    }
}

/// Builds the list query shared by every list route.
pub fn list_query(params: &Params) -> ApiResult<ListQuery> {
    let (skip, take) = params.paging()?;
    Ok(ListQuery {
        ids: params.list("ids"),
        partial_name: params.get("partialName").map(str::to_owned),
        name: params.get("name").map(str::to_owned),
        parent_id: None,
        skip,
        take,
    })
}

/// Serves a page of documents.
pub fn page<T: Resource>(
    docs: Vec<Document>,
    total: u64,
    query: &ListQuery,
    space: &SpaceId,
    path: String,
) -> ApiResult<Collection<T>> {
    let items = docs
        .iter()
        .map(|doc| present::<T>(doc, space))
        .collect::<ApiResult<Vec<T>>>()?;
    let template = format!("{path}{{/id}}{{?skip,take,ids,partialName}}");
    Ok(Collection::page(
        T::KIND,
        items,
        total,
        query.skip,
        query.take,
        &path,
        &template,
    ))
}

/// `query` without its paging: every matching document, to filter in memory before paging.
pub fn unpaged(query: &ListQuery) -> ListQuery {
    ListQuery {
        skip: 0,
        take: u64::from(u32::MAX),
        ..query.clone()
    }
}

/// The page `query` asks for of an in-memory list, and the list's length.
pub fn page_slice<T>(items: Vec<T>, query: &ListQuery) -> (Vec<T>, u64) {
    let total = items.len() as u64;
    let page = items
        .into_iter()
        .skip(usize::try_from(query.skip).unwrap_or(usize::MAX))
        .take(usize::try_from(query.take).unwrap_or(usize::MAX))
        .collect();
    (page, total)
}

/// Whether the principal may see `doc` (None: whether it may see every document of the kind).
/// Environments and deployment targets are restrictable (a team scoped to Test sees Test and
/// the targets in Test); the other generic resources are seen whole by whoever passed the
/// route's rule.
fn visible(principal: &Principal, scope: &SpaceScope, kind: &str, doc: Option<&Document>) -> bool {
    if kind == crate::machines::Target::KIND {
        let environments = doc
            .map(|doc| crate::machines::environments_of(&doc.data))
            .unwrap_or_default();
        return crate::machines::allowed_in(
            principal,
            &scope.id,
            cuttle_authz::Permission::MachineView,
            &environments,
            crate::machines::Needs::Any,
        );
    }
    if kind != Environment::KIND {
        return true;
    }
    principal.grants.allows(
        cuttle_authz::Permission::EnvironmentView,
        &cuttle_authz::Target {
            space: Some(scope.id.as_str()),
            environment: doc.map(|doc| doc.id.as_str()),
            ..Default::default()
        },
    )
}

pub(crate) async fn list<T: Resource>(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Collection<T>>> {
    let query = list_query(&params)?;
    let path = format!("{}/{}", space_prefix(scope.id.as_str()), T::COLLECTION);
    if visible(&principal, &scope, T::KIND, None) {
        let (docs, total) = documents::list(state.store.conn(), &scope.id, T::KIND, &query).await?;
        return Ok(Json(page(docs, total, &query, &scope.id, path)?));
    }
    // Restricted: filter everything, then page what is visible.
    let (docs, _) =
        documents::list(state.store.conn(), &scope.id, T::KIND, &unpaged(&query)).await?;
    let visible: Vec<Document> = docs
        .into_iter()
        .filter(|d| visible(&principal, &scope, T::KIND, Some(d)))
        .collect();
    let (shown, total) = page_slice(visible, &query);
    Ok(Json(page(shown, total, &query, &scope.id, path)?))
}

pub(crate) async fn all<T: Resource>(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
) -> ApiResult<Json<Vec<T>>> {
    let query = ListQuery::everything();
    let (docs, _) = documents::list(state.store.conn(), &scope.id, T::KIND, &query).await?;
    let docs: Vec<Document> = docs
        .into_iter()
        .filter(|d| visible(&principal, &scope, T::KIND, Some(d)))
        .collect();
    Ok(Json(
        docs.iter()
            .map(|doc| present::<T>(doc, &scope.id))
            .collect::<ApiResult<_>>()?,
    ))
}

pub(crate) async fn get_one<T: Resource>(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<T>> {
    let (doc, _) = load::<T>(state.store.conn(), &scope.id, path.get("id")?).await?;
    if !visible(&principal, &scope, T::KIND, Some(&doc)) {
        return Err(ApiError::not_found(format!("{} '{}'", T::KIND, doc.id)));
    }
    Ok(Json(present(&doc, &scope.id)?))
}

/// Inserts a new resource in the caller's transaction and returns it with links.
pub async fn insert<T: Resource>(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    mut value: T,
) -> ApiResult<T> {
    let id = cuttle_store::next_id(conn, T::PREFIX).await?;
    let number = numeric_suffix(&id, T::PREFIX).unwrap_or(0) as i64;
    value.assign(id.clone(), space);
    value.prepare()?;
    let name = require_name(value.name(), T::NOUN)?;
    documents::insert(
        conn,
        NewDocument {
            id,
            space_id: space.clone(),
            kind: T::KIND,
            name: name.clone(),
            parent_id: value.parent_id(),
            unique_key: Some(unique_name_key(value.parent_id().as_deref(), &name)),
            sort_order: value.sort_order(number),
            data: documents::encode(&value),
        },
        &name_taken(T::NOUN, &name),
    )
    .await?;
    value.set_links(value.links(space));
    Ok(value)
}

/// Names are unique per kind in a space, or per owner for owned kinds (channels per project).
pub fn unique_name_key(parent: Option<&str>, name: &str) -> String {
    match parent {
        Some(parent) => format!("{parent}/{}", name.to_lowercase()),
        None => name.to_lowercase(),
    }
}

async fn create<T: Resource>(
    State(state): State<AppState>,
    scope: SpaceScope,
    JsonBody(value): JsonBody<T>,
) -> ApiResult<(StatusCode, Json<T>)> {
    let txn = state.store.conn().begin().await?;
    let created = insert(&txn, &scope.id, value).await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Replaces a resource (id and space come from the route, never from the body).
pub async fn replace<T: Resource>(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    id: &str,
    mut value: T,
) -> ApiResult<T> {
    let (doc, _) = load::<T>(conn, space, id).await?;
    value.assign(doc.id.clone(), space);
    value.prepare()?;
    let name = require_name(value.name(), T::NOUN)?;
    let number = numeric_suffix(id, T::PREFIX).unwrap_or(0) as i64;
    let replacement = Replacement {
        name: name.clone(),
        unique_key: Some(unique_name_key(value.parent_id().as_deref(), &name)),
        sort_order: value.sort_order(number),
        data: documents::encode(&value),
        expected_version: None,
    };
    documents::replace(
        conn,
        space,
        T::KIND,
        id,
        replacement,
        &name_taken(T::NOUN, &name),
    )
    .await?
    .ok_or_else(|| ApiError::not_found(format!("{} '{id}'", T::NOUN)))?;
    value.set_links(value.links(space));
    Ok(value)
}

async fn update<T: Resource>(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
    JsonBody(value): JsonBody<T>,
) -> ApiResult<Json<T>> {
    let txn = state.store.conn().begin().await?;
    let updated = replace(&txn, &scope.id, path.get("id")?, value).await?;
    txn.commit().await?;
    Ok(Json(updated))
}

pub(crate) async fn delete<T: Resource>(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let id = path.get("id")?;
    let txn = state.store.conn().begin().await?;
    if !documents::delete(&txn, &scope.id, T::KIND, id).await? {
        return Err(ApiError::not_found(format!("{} '{id}'", T::NOUN)));
    }
    if T::KIND == Environment::KIND {
        crate::tenants::forget(&txn, &scope.id, crate::tenants::Gone::Environment(id)).await?;
    }
    txn.commit().await?;
    Ok(StatusCode::OK)
}

/// list, all, get, create, modify and delete for one resource under `prefix`.
pub fn crud<T: Resource>(prefix: &str) -> Router<AppState> {
    let base = format!("{prefix}/{}", T::COLLECTION);
    item_routes::<T>(prefix).route(&base, get(list::<T>).post(create::<T>))
}

/// all, get, modify and delete, for resources whose list or create has extra rules.
pub fn item_routes<T: Resource>(prefix: &str) -> Router<AppState> {
    let base = format!("{prefix}/{}", T::COLLECTION);
    Router::new()
        .route(&format!("{base}/all"), get(all::<T>))
        .route(
            &format!("{base}/{{id}}"),
            get(get_one::<T>).put(update::<T>).delete(delete::<T>),
        )
}

/// Routes of this module.
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .merge(crud::<ProjectGroup>(prefix))
        .merge(crud::<Lifecycle>(prefix))
        .merge(crud::<Environment>(prefix).route(
            &format!("{prefix}/environments/sortorder"),
            axum::routing::put(sort_environments),
        ))
        .merge(feed_routes(prefix))
}

impl Resource for ProjectGroup {
    const KIND: &'static str = "ProjectGroup";
    const PREFIX: &'static str = "ProjectGroups";
    const COLLECTION: &'static str = "projectgroups";
    const NOUN: &'static str = "project group";

    resource_accessors!();

    resource_assign!();
    fn links(&self, space: &SpaceId) -> Links {
        let base = format!("{}/projectgroups/{}", space_prefix(space.as_str()), self.id);
        links([
            ("Self", base.clone()),
            ("Projects", format!("{base}/projects{{?skip,take}}")),
            (
                "Web",
                format!("/app#/{space}/projects?projectGroup={}", self.id),
            ),
        ])
    }
    fn prepare(&mut self) -> ApiResult<()> {
        self.slug = slugify(&self.name);
        Ok(())
    }
}

impl Resource for Lifecycle {
    const KIND: &'static str = "Lifecycle";
    const PREFIX: &'static str = "Lifecycles";
    const COLLECTION: &'static str = "lifecycles";
    const NOUN: &'static str = "lifecycle";

    resource_accessors!();

    resource_assign!();
    fn links(&self, space: &SpaceId) -> Links {
        let base = format!("{}/lifecycles/{}", space_prefix(space.as_str()), self.id);
        links([
            ("Self", base.clone()),
            ("Preview", format!("{base}/preview")),
            ("Projects", format!("{base}/projects")),
        ])
    }
    fn prepare(&mut self) -> ApiResult<()> {
        self.slug = slugify(&self.name);
        for (index, phase) in self.phases.iter_mut().enumerate() {
            if phase.id.trim().is_empty() {
                phase.id = uuid::Uuid::new_v4().to_string();
            }
            if phase.name.trim().is_empty() {
                return Err(ApiError::invalid_field(
                    &format!("Phases[{index}].Name"),
                    "every phase needs a name",
                ));
            }
            if phase.minimum_environments_before_promotion < 0 {
                return Err(ApiError::invalid_field(
                    &format!("Phases[{index}].MinimumEnvironmentsBeforePromotion"),
                    "must be 0 (all) or more",
                ));
            }
        }
        Ok(())
    }
}

impl Resource for Environment {
    const KIND: &'static str = "Environment";
    const PREFIX: &'static str = "Environments";
    const COLLECTION: &'static str = "environments";
    const NOUN: &'static str = "environment";

    resource_accessors!();

    resource_assign!();
    fn links(&self, space: &SpaceId) -> Links {
        let base = format!("{}/environments/{}", space_prefix(space.as_str()), self.id);
        links([
            ("Self", base.clone()),
            (
                "Machines",
                format!(
                    "{base}/machines{{?skip,take,partialName,roles,isDisabled,healthStatuses,commStyles,tenantIds,tenantTags,shellNames}}"
                ),
            ),
            (
                "SinglyScopedVariableDetails",
                format!("{base}/singlyScopedVariableDetails"),
            ),
            ("Metadata", format!("{base}/metadata")),
            (
                "Web",
                format!("/app#/{space}/infrastructure/environments/{}", self.id),
            ),
        ])
    }
    fn sort_order(&self, number: i64) -> i64 {
        // A new environment without an explicit order goes last, like Octopus.
        if self.sort_order > 0 {
            self.sort_order
        } else {
            number
        }
    }
    fn prepare(&mut self) -> ApiResult<()> {
        self.slug = slugify(&self.name);
        if self.sort_order < 0 {
            return Err(ApiError::invalid_field(
                "SortOrder",
                "must be zero or positive",
            ));
        }
        Ok(())
    }
}

/// `PUT /environments/sortorder` with an array of environment ids.
async fn sort_environments(
    State(state): State<AppState>,
    scope: SpaceScope,
    JsonBody(ids): JsonBody<Vec<String>>,
) -> ApiResult<StatusCode> {
    let txn = state.store.conn().begin().await?;
    for (index, id) in ids.iter().enumerate() {
        let (_, mut environment) = load::<Environment>(&txn, &scope.id, id).await?;
        environment.sort_order = index as i64 + 1;
        replace(&txn, &scope.id, id, environment).await?;
    }
    txn.commit().await?;
    Ok(StatusCode::OK)
}

impl Resource for Feed {
    const KIND: &'static str = "Feed";
    const PREFIX: &'static str = "Feeds";
    const COLLECTION: &'static str = "feeds";
    const NOUN: &'static str = "feed";

    resource_accessors!();

    resource_assign!();
    fn links(&self, space: &SpaceId) -> Links {
        let base = format!("{}/feeds/{}", space_prefix(space.as_str()), self.id);
        links([
            ("Self", base.clone()),
            (
                "SearchPackageVersionsTemplate",
                format!(
                    "{base}/packages/versions{{?packageId,take,skip,includePreRelease,versionRange,preReleaseTag,filter,includeReleaseNotes}}"
                ),
            ),
        ])
    }
}

/// Feeds are read-only here: only the built-in feed exists until external feeds are built.
fn feed_routes(prefix: &str) -> Router<AppState> {
    let base = format!("{prefix}/feeds");
    Router::new()
        .route(&base, get(list::<Feed>).post(feed_not_available))
        .route(&format!("{base}/all"), get(all::<Feed>))
        .route(
            &format!("{base}/{{id}}"),
            get(get_one::<Feed>)
                .put(update_feed)
                .delete(feed_not_available),
        )
}

/// Longest retention in days, and most versions kept, that a feed accepts.
const MAX_RETENTION: i64 = 100_000;

/// `PUT /api/{space}/feeds/feeds-builtin`: only the built-in feed's retention settings change
/// (`DeleteUnreleasedPackagesAfterDays`, `KeepLatestVersionsPerPackage`); its name and type are
/// fixed, as in Octopus.
async fn update_feed(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
    JsonBody(body): JsonBody<Feed>,
) -> ApiResult<Json<Feed>> {
    let id = path.get("id")?;
    if !id.eq_ignore_ascii_case(cuttle_package_feed::retention::BUILT_IN_FEED_ID) {
        return Err(feed_not_available().await);
    }
    for (field, value) in [
        (
            "DeleteUnreleasedPackagesAfterDays",
            body.delete_unreleased_packages_after_days,
        ),
        (
            "KeepLatestVersionsPerPackage",
            body.keep_latest_versions_per_package,
        ),
    ] {
        if !(0..=MAX_RETENTION).contains(&value) {
            return Err(ApiError::invalid_field(
                field,
                format!("must be between 0 (keep everything) and {MAX_RETENTION}"),
            ));
        }
    }
    let txn = state.store.conn().begin().await?;
    let doc = documents::get(&txn, &scope.id, Feed::KIND, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("feed '{id}'")))?;
    let mut feed: Feed = documents::decode(&doc)?;
    feed.delete_unreleased_packages_after_days = body.delete_unreleased_packages_after_days;
    feed.keep_latest_versions_per_package = body.keep_latest_versions_per_package;
    let replacement = documents::Replacement {
        name: doc.name.clone(),
        unique_key: doc.unique_key.clone(),
        sort_order: doc.sort_order,
        data: documents::encode(&feed),
        expected_version: None,
    };
    documents::replace(&txn, &scope.id, Feed::KIND, &doc.id, replacement, "").await?;
    txn.commit().await?;
    feed.links = feed.links(&scope.id);
    Ok(Json(feed))
}

async fn feed_not_available() -> ApiError {
    ApiError::not_implemented("Adding, changing or deleting feeds (only the built-in feed exists)")
}
