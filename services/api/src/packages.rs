//! The built-in package feed's HTTP surface (spec B.11 to B.13, D.13): push, find, download
//! and delete package versions, and build information. The rules live in the
//! `cuttle-package-feed` library; these handlers stream bytes and hold transactions.
//!
//! A push decides against what is already stored as soon as the file part's name is known,
//! then reads the upload once: each chunk is spooled to a temporary file and hashed (see
//! `cuttle_package_feed::spool` for why) and, at the same time, relayed to the blob store
//! (`cuttle_package_feed::relay`). Once the spooled copy passes validation the relay is
//! committed and the store publishes the object; only then is the row written. A package is
//! visible only once its file is complete, and a failed push leaves neither object nor row.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathParams, SpaceScope};
use crate::links::{links, space_prefix};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::extract::multipart::{Field, Multipart, MultipartRejection};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use cuttle_domain::SpaceId;
use cuttle_domain::package::{PackageId, PackageVersion};
use cuttle_package_feed::{
    InvalidPackage, OverwriteMode, PackageFileName, PackageMetadata, PushDecision, RangeRequest,
    Spool, Spooled,
};
use cuttle_store::packages::{
    self, BUILD_INFORMATION_EXISTS, BuildInformationRow, NewBuildInformation, NewPackage,
    PACKAGE_EXISTS, PackageRow,
};
use cuttle_store::{StoreError, TransactionTrait};
use cuttle_wire::packages::{
    BuildInformation, CreateBuildInformationCommand, OctopusBuildInformation, Package,
    PackageVersionSummary,
};
use cuttle_wire::{Collection, ErrorBody};
use std::cmp::Ordering;

/// The built-in feed's id.
pub const BUILTIN_FEED_ID: &str = "feeds-builtin";

/// The feed's routes under one of the three space prefixes.
pub fn routes(prefix: &str) -> axum::Router<AppState> {
    let packages = format!("{prefix}/packages");
    let build_information = format!("{prefix}/build-information");
    Router::new()
        .route(&packages, get(list))
        // Uploads stream to disk with bounded memory, so they have no size cap (packages of
        // several GB are normal); every other body is buffered and keeps the router's limit.
        .route(
            &format!("{packages}/raw"),
            post(push).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        // `bulk-delete` is the route Octopus's own UI uses; `bulk` is the shorter alias.
        .route(&format!("{packages}/bulk"), delete(delete_bulk))
        .route(&format!("{packages}/bulk-delete"), delete(delete_bulk))
        .route(
            &format!("{packages}/{{id}}"),
            get(get_one).delete(delete_one),
        )
        .route(&format!("{packages}/{{id}}/raw"), get(download))
        .route(
            &format!("{packages}/{{id}}/{{version}}/delta-signature"),
            get(delta_signature),
        )
        .route(
            &format!("{prefix}/feeds/{{id}}/packages/versions"),
            get(versions),
        )
        .route(
            &build_information,
            get(list_build_information).post(push_build_information),
        )
        .route(
            &format!("{build_information}/{{id}}"),
            get(get_build_information),
        )
}

// ---------------------------------------------------------------------------------------------
// Push

/// `POST /api/{space}/packages/raw?overwriteMode=`: one multipart file part, under any field
/// name (TypeScript sends `fileToUpload`, C# and Go `file`, curl examples `data`).
async fn push(
    State(state): State<AppState>,
    scope: SpaceScope,
    params: Params,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Package>)> {
    let mode = overwrite_mode(&params)?;
    let mut multipart = multipart.map_err(|err| {
        ApiError::bad_request(
            "The package must be uploaded as multipart/form-data with one file part.",
            vec![err.body_text()],
        )
    })?;
    let outcome = push_file(&state, &scope.id, mode, &mut multipart).await;
    // Read the rest of the body before answering, whatever the outcome: a client still sending
    // a large body to a server that stopped reading sees a reset, not our answer.
    drain(&mut multipart).await;
    outcome
}

/// Pushes the first file part; parts without a file name are skipped.
async fn push_file(
    state: &AppState,
    space: &SpaceId,
    mode: OverwriteMode,
    multipart: &mut Multipart,
) -> ApiResult<(StatusCode, Json<Package>)> {
    loop {
        let field = multipart.next_field().await.map_err(unreadable_upload)?;
        let Some(mut field) = field else {
            return Err(ApiError::bad_request(
                "The request has no file part: upload the package as a multipart/form-data file field.",
                Vec::new(),
            ));
        };
        let Some(file_name) = field.file_name().map(str::to_owned) else {
            continue;
        };
        return match PackageFileName::parse(&file_name) {
            Ok(name) => push_named(state, space, mode, name, field).await,
            Err(err) => {
                discard(&mut field).await;
                Err(invalid_package(err))
            }
        };
    }
}

/// Pushes one file part: decides against what is stored, then receives, validates and stores
/// the file in one pass (see the module docs) and writes its row.
async fn push_named(
    state: &AppState,
    space: &SpaceId,
    mode: OverwriteMode,
    name: PackageFileName,
    mut field: Field<'_>,
) -> ApiResult<(StatusCode, Json<Package>)> {
    let existing = match packages::find(
        state.store.conn(),
        space,
        &name.id.lower(),
        &name.version.normalized(),
    )
    .await
    {
        Ok(existing) => existing,
        Err(err) => {
            discard(&mut field).await;
            return Err(err.into());
        }
    };
    let decision = mode.decide(existing.is_some());
    match (decision, existing) {
        (PushDecision::Refuse, _) => {
            discard(&mut field).await;
            return Err(package_exists(&name));
        }
        (PushDecision::KeepExisting, Some(row)) => {
            discard(&mut field).await;
            tracing::info!(space.id = %space, package.id = %row.package_id, package.version = %row.version, "package push ignored: the version already exists");
            return Ok((StatusCode::OK, Json(present(state, space, row).await?)));
        }
        _ => {}
    }

    // The blob store receives the file while it arrives; it publishes the object only once the
    // spooled copy has passed validation.
    let key = cuttle_package_feed::blob_key(space);
    let (sender, body) = cuttle_package_feed::relay();
    let (received, put) = tokio::join!(
        receive_checked(&mut field, &name, sender),
        state.blob.put(&key, body)
    );
    let (spooled, metadata) = match (received, put) {
        (Ok(received), Ok(_)) => received,
        (Err(Refused::Push(err)), _) => return Err(err),
        (_, Err(err)) => return Err(ApiError::internal(err)),
        (Err(Refused::StoreStopped), Ok(_)) => {
            return Err(ApiError::internal(
                "the blob store stopped reading a package it then stored",
            ));
        }
    };

    let new = NewPackage {
        package_id: name.id.as_str().to_owned(),
        version: name.version.as_str().to_owned(),
        version_normalized: name.version.normalized(),
        extension: name.extension.clone(),
        size_bytes: spooled.size,
        sha256: spooled.sha256.clone(),
        blob_key: key.clone(),
        title: metadata.title,
        summary: metadata.summary,
        description: metadata.description,
        release_notes: metadata.release_notes,
    };
    // The blob is complete; the row makes it visible. If the row cannot be written, the blob
    // goes again so that nothing is left behind.
    let stored = store_row(state, space, decision, mode, new).await;
    let (status, row, replaced_key) = match stored {
        Ok(stored) => stored,
        Err(err) => {
            delete_blob(state, &key).await;
            return Err(err);
        }
    };
    if row.blob_key != key {
        // IgnoreIfExists lost a race: another push stored this version first.
        delete_blob(state, &key).await;
    }
    if let Some(old_key) = replaced_key {
        delete_blob(state, &old_key).await;
    }
    tracing::info!(space.id = %space, package.id = %row.package_id, package.version = %row.version, package.size_bytes = row.size_bytes, "package stored");
    Ok((status, Json(present(state, space, row).await?)))
}

/// Why [`receive_checked`] did not commit.
enum Refused {
    /// The push itself failed (bad upload, invalid package, local I/O): this is the answer.
    Push(ApiError),
    /// The blob store stopped reading; its own error is the answer.
    StoreStopped,
}

/// Receives the file into a spool (hashing it) while relaying it to the blob store, validates
/// the spooled copy, then commits the relay, or abandons it so the store keeps nothing.
async fn receive_checked(
    field: &mut Field<'_>,
    name: &PackageFileName,
    sender: cuttle_package_feed::RelaySender,
) -> Result<(Spooled, PackageMetadata), Refused> {
    let refuse = Refused::Push;
    // Every early return drops `sender` without committing, which fails the store's put.
    let mut spool = Spool::new().map_err(|err| refuse(ApiError::internal(err)))?;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|err| refuse(unreadable_upload(err)))?
    {
        spool
            .write(&chunk)
            .await
            .map_err(|err| refuse(ApiError::internal(err)))?;
        if sender.send(chunk).await.is_err() {
            discard(field).await;
            return Err(Refused::StoreStopped);
        }
    }
    let spooled = spool
        .finish()
        .await
        .map_err(|err| refuse(ApiError::internal(err)))?;
    if spooled.size == 0 {
        sender.abandon("the package file is empty").await;
        return Err(refuse(invalid_package(InvalidPackage::Empty)));
    }
    // Validation reads the whole file (a zip from its end), so it runs off the async threads.
    let checked_name = name.clone();
    let (spooled, checked) = tokio::task::spawn_blocking(move || {
        let checked = cuttle_package_feed::archive::validate(spooled.path(), &checked_name);
        (spooled, checked)
    })
    .await
    .map_err(|err| refuse(ApiError::internal(err)))?;
    match checked {
        Ok(metadata) => {
            sender.commit().await.map_err(|_| Refused::StoreStopped)?;
            Ok((spooled, metadata))
        }
        Err(err) => {
            sender.abandon("the package failed validation").await;
            Err(refuse(invalid_package(err)))
        }
    }
}

/// Writes the row for a stored blob; returns the status, the row and the blob key it replaced.
async fn store_row(
    state: &AppState,
    space: &SpaceId,
    decision: PushDecision,
    mode: OverwriteMode,
    new: NewPackage,
) -> ApiResult<(StatusCode, PackageRow, Option<String>)> {
    let txn = state.store.begin().await?;
    let id_lower = new.package_id.to_ascii_lowercase();
    let version_key = new.version_normalized.clone();
    let outcome = if decision == PushDecision::Replace {
        match packages::replace(&txn, space, new.clone()).await? {
            Some((old, row)) => (StatusCode::CREATED, row, Some(old.blob_key)),
            // Deleted since we looked: store it as new.
            None => (
                StatusCode::CREATED,
                packages::insert(&txn, space, new).await?,
                None,
            ),
        }
    } else {
        match packages::insert(&txn, space, new.clone()).await {
            Ok(row) => (StatusCode::CREATED, row, None),
            // Another push of the same version committed since we looked.
            Err(StoreError::Conflict(_)) => {
                drop(txn);
                let existing = packages::find(state.store.conn(), space, &id_lower, &version_key)
                    .await?
                    .ok_or_else(|| ApiError::internal("a conflicting package row vanished"))?;
                return match mode {
                    OverwriteMode::IgnoreIfExists => Ok((StatusCode::OK, existing, None)),
                    _ => Err(ApiError::conflict(format!(
                        "{PACKAGE_EXISTS}: {} version {} was pushed by another request at the same time.",
                        existing.package_id, existing.version
                    ))),
                };
            }
            Err(err) => return Err(err.into()),
        }
    };
    txn.commit().await?;
    Ok(outcome)
}

async fn discard(field: &mut Field<'_>) {
    loop {
        match field.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(err) => {
                tracing::debug!(error = %err, "stopped discarding an upload part: the body ended badly");
                return;
            }
        }
    }
}

/// Reads and discards the parts after the file, so the whole body is consumed.
async fn drain(multipart: &mut Multipart) {
    loop {
        match multipart.next_field().await {
            Ok(Some(mut field)) => discard(&mut field).await,
            Ok(None) => return,
            Err(err) => {
                tracing::debug!(error = %err, "stopped reading the parts after the package file");
                return;
            }
        }
    }
}

fn unreadable_upload(err: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::bad_request(
        "The upload could not be read as multipart/form-data.",
        vec![err.body_text()],
    )
}

fn invalid_package(err: InvalidPackage) -> ApiError {
    match err {
        InvalidPackage::Io(io) => ApiError::internal(format!("reading a spooled upload: {io}")),
        InvalidPackage::FileName { .. } => ApiError::invalid_field("fileName", err.to_string()),
        other => ApiError::bad_request(other.to_string(), Vec::new()),
    }
}

fn package_exists(name: &PackageFileName) -> ApiError {
    ApiError::conflict(format!(
        "{PACKAGE_EXISTS}: {} version {} is already in the feed. Push with overwriteMode=OverwriteExisting to replace it, or IgnoreIfExists to keep it.",
        name.id, name.version
    ))
}

fn overwrite_mode(params: &Params) -> ApiResult<OverwriteMode> {
    OverwriteMode::from_query(params.get("overwriteMode"), params.flag("replace")?)
        .map_err(|err| ApiError::invalid_field("overwriteMode", err.to_string()))
}

/// Deletes a blob no row points to; a failure leaves an orphan, which is logged (retention will
/// sweep orphans) but does not fail the request.
async fn delete_blob(state: &AppState, key: &str) {
    if let Err(err) = state.blob.delete(key).await {
        tracing::warn!(blob.key = key, error = %err, "could not delete a package file no row points to; it is left as an orphan");
    }
}

// ---------------------------------------------------------------------------------------------
// Find

/// Sorts rows by id, then newest version first.
fn sort_newest_first(rows: &mut [PackageRow]) {
    rows.sort_by(|left, right| {
        left.package_id_lower
            .cmp(&right.package_id_lower)
            .then_with(|| compare_versions(&right.version, &left.version))
    });
}

/// Version precedence of two stored versions (stored versions always parse; anything else
/// sorts by text so that a bad row cannot break a listing).
fn compare_versions(left: &str, right: &str) -> Ordering {
    match (PackageVersion::parse(left), PackageVersion::parse(right)) {
        (Ok(left), Ok(right)) => left.cmp(&right),
        _ => left.cmp(right),
    }
}

/// Keeps the first (newest) row of each package id.
fn newest_only<T>(rows: Vec<T>, id_of: impl Fn(&T) -> &str) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    rows.into_iter()
        .filter(|row| seen.insert(id_of(row).to_owned()))
        .collect()
}

fn page_of<T>(rows: Vec<T>, skip: u64, take: u64) -> Vec<T> {
    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
    let take = usize::try_from(take).unwrap_or(usize::MAX);
    rows.into_iter().skip(skip).take(take).collect()
}

/// `GET /api/{space}/packages{?nuGetPackageId,filter,latest,skip,take,includeNotes}`.
async fn list(
    State(state): State<AppState>,
    scope: SpaceScope,
    params: Params,
) -> ApiResult<Json<Collection<Package>>> {
    let (skip, take) = params.paging()?;
    let latest = params.flag("latest")?.unwrap_or(false);
    let exact = params.get("nuGetPackageId").map(str::to_ascii_lowercase);
    let mut rows = packages::list(
        state.store.conn(),
        &scope.id,
        params.get("filter"),
        exact.as_deref(),
    )
    .await?;
    sort_newest_first(&mut rows);
    if latest {
        rows = newest_only(rows, |row| &row.package_id_lower);
    }
    let total = rows.len() as u64;
    let mut items = Vec::new();
    for row in page_of(rows, skip, take) {
        items.push(present(&state, &scope.id, row).await?);
    }
    let path = format!("{}/packages", space_prefix(scope.id.as_str()));
    let template = format!("{path}{{/id}}{{?nuGetPackageId,filter,latest,skip,take,includeNotes}}");
    Ok(Json(Collection::page(
        "Package", items, total, skip, take, &path, &template,
    )))
}

/// Loads the row an Octopus package id (`packages-<PackageId>.<Version>`) names, or 404.
async fn load(state: &AppState, space: &SpaceId, id: &str) -> ApiResult<PackageRow> {
    let not_found = || ApiError::not_found(format!("package '{id}'"));
    let (package_id, version) =
        cuttle_package_feed::parse_octopus_package_id(id).ok_or_else(not_found)?;
    packages::find(
        state.store.conn(),
        space,
        &package_id.lower(),
        &version.normalized(),
    )
    .await?
    .ok_or_else(not_found)
}

/// `GET /api/{space}/packages/{id}`.
async fn get_one(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<Json<Package>> {
    let row = load(&state, &scope.id, path.get("id")?).await?;
    Ok(Json(present(&state, &scope.id, row).await?))
}

/// `GET /api/{space}/feeds/{feedId}/packages/versions?packageId=`: versions of one package,
/// newest first. Pre-releases are included unless `includePreRelease=false`.
async fn versions(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
    params: Params,
) -> ApiResult<Json<Collection<PackageVersionSummary>>> {
    let feed_id = path.get("id")?;
    if !feed_id.eq_ignore_ascii_case(BUILTIN_FEED_ID) {
        return Err(ApiError::not_found(format!("feed '{feed_id}'")));
    }
    for unsupported in ["versionRange", "preReleaseTag"] {
        if params.get(unsupported).is_some() {
            return Err(ApiError::unavailable(&format!(
                "Searching package versions by {unsupported}"
            )));
        }
    }
    let package_id = params
        .get("packageId")
        .ok_or_else(|| ApiError::invalid_field("packageId", "the package id is required"))?;
    let include_prerelease = params.flag("includePreRelease")?.unwrap_or(true);
    let version_filter = params.get("filter").map(str::to_ascii_lowercase);
    let (skip, take) = params.paging()?;
    let mut rows = packages::list(
        state.store.conn(),
        &scope.id,
        None,
        Some(&package_id.to_ascii_lowercase()),
    )
    .await?;
    sort_newest_first(&mut rows);
    rows.retain(|row| {
        let prerelease_ok = include_prerelease
            || PackageVersion::parse(&row.version).is_ok_and(|v| !v.is_prerelease());
        let filter_ok = version_filter
            .as_deref()
            .is_none_or(|filter| row.version.to_ascii_lowercase().contains(filter));
        prerelease_ok && filter_ok
    });
    let total = rows.len() as u64;
    let prefix = space_prefix(scope.id.as_str());
    let items = page_of(rows, skip, take)
        .into_iter()
        .map(|row| {
            let id = cuttle_package_feed::octopus_package_id(&row.package_id, &row.version);
            PackageVersionSummary {
                links: links([("Self", format!("{prefix}/packages/{id}"))]),
                id,
                package_id: row.package_id,
                version: row.version,
                published: cuttle_wire::dates::format(&row.published),
                size_bytes: u64::try_from(row.size_bytes).unwrap_or(0),
                title: row.title,
                release_notes: row.release_notes,
                feed_id: BUILTIN_FEED_ID.to_owned(),
            }
        })
        .collect();
    let path = format!("{prefix}/feeds/{BUILTIN_FEED_ID}/packages/versions");
    let template = format!(
        "{path}{{?packageId,take,skip,includePreRelease,versionRange,preReleaseTag,filter,includeReleaseNotes}}"
    );
    Ok(Json(Collection::page(
        "PackageVersion",
        items,
        total,
        skip,
        take,
        &path,
        &template,
    )))
}

/// The wire form of a row, with its build information when some was pushed.
async fn present(state: &AppState, space: &SpaceId, row: PackageRow) -> ApiResult<Package> {
    let build_information = packages::find_build_information(
        state.store.conn(),
        space,
        &row.package_id_lower,
        &row.version_normalized,
    )
    .await?
    .map(|info| present_build_information(space, info))
    .transpose()?;
    let id = cuttle_package_feed::octopus_package_id(&row.package_id, &row.version);
    let self_link = format!("{}/packages/{id}", space_prefix(space.as_str()));
    Ok(Package {
        links: links([
            ("Self", self_link.clone()),
            ("Raw", format!("{self_link}/raw")),
            (
                "Feed",
                format!("{}/feeds/{BUILTIN_FEED_ID}", space_prefix(space.as_str())),
            ),
        ]),
        id,
        nu_get_package_id: row.package_id.clone(),
        package_id: row.package_id,
        version: row.version,
        title: row.title,
        summary: row.summary,
        description: row.description,
        release_notes: row.release_notes,
        published: cuttle_wire::dates::format(&row.published),
        file_extension: row.extension,
        feed_id: BUILTIN_FEED_ID.to_owned(),
        nu_get_feed_id: BUILTIN_FEED_ID.to_owned(),
        package_size_bytes: u64::try_from(row.size_bytes).unwrap_or(0),
        hash: row.sha256,
        package_version_build_information: build_information,
    })
}

// ---------------------------------------------------------------------------------------------
// Download and delete

/// `GET /api/{space}/packages/{id}/raw`: the file, streamed, with single byte ranges.
async fn download(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let row = load(&state, &scope.id, path.get("id")?).await?;
    let size = u64::try_from(row.size_bytes).unwrap_or(0);
    let range_header = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok());
    let (status, range) = match cuttle_package_feed::parse_range(range_header, size) {
        RangeRequest::Full => (StatusCode::OK, None),
        RangeRequest::Partial(range) => (StatusCode::PARTIAL_CONTENT, Some(range)),
        RangeRequest::Unsatisfiable => {
            let body = ErrorBody::new(
                format!("The requested range is not within the package file's {size} bytes."),
                Vec::new(),
            );
            let mut response = (StatusCode::RANGE_NOT_SATISFIABLE, Json(body)).into_response();
            insert_header(
                &mut response,
                header::CONTENT_RANGE,
                &format!("bytes */{size}"),
            );
            insert_header(&mut response, header::ACCEPT_RANGES, "bytes");
            return Ok(response);
        }
    };
    let reader = state
        .blob
        .get(&row.blob_key, range.clone())
        .await
        .map_err(ApiError::internal)?;
    let mut response = Response::new(Body::from_stream(reader.stream));
    *response.status_mut() = status;
    insert_header(
        &mut response,
        header::CONTENT_TYPE,
        "application/octet-stream",
    );
    insert_header(
        &mut response,
        header::CONTENT_LENGTH,
        &reader.size.to_string(),
    );
    insert_header(&mut response, header::ACCEPT_RANGES, "bytes");
    let file_name = format!("{}.{}{}", row.package_id, row.version, row.extension);
    insert_header(
        &mut response,
        header::CONTENT_DISPOSITION,
        &format!("attachment; filename=\"{file_name}\""),
    );
    if let Some(range) = range {
        let last = range.end.saturating_sub(1);
        insert_header(
            &mut response,
            header::CONTENT_RANGE,
            &format!("bytes {}-{last}/{}", range.start, reader.total_size),
        );
    }
    Ok(response)
}

fn insert_header(response: &mut Response, name: header::HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(value) => {
            response.headers_mut().insert(name, value);
        }
        Err(err) => {
            tracing::warn!(header = %name, error = %err, "a response header value was not valid and was left out")
        }
    }
}

/// `DELETE /api/{space}/packages/{id}`.
async fn delete_one(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let row = load(&state, &scope.id, path.get("id")?).await?;
    delete_rows(&state, &scope.id, vec![row]).await?;
    Ok(StatusCode::OK)
}

/// `DELETE /api/{space}/packages/bulk?ids=a,b`: deletes the versions that exist; unknown ids
/// are skipped, as Octopus does.
async fn delete_bulk(
    State(state): State<AppState>,
    scope: SpaceScope,
    params: Params,
) -> ApiResult<StatusCode> {
    let ids = params.list("ids");
    if ids.is_empty() {
        return Err(ApiError::invalid_field(
            "ids",
            "name at least one package id, such as ids=packages-Hello.1.0.0",
        ));
    }
    let mut rows = Vec::new();
    for id in &ids {
        match load(&state, &scope.id, id).await {
            Ok(row) => rows.push(row),
            Err(err) if err.status() == StatusCode::NOT_FOUND => {}
            Err(err) => return Err(err),
        }
    }
    delete_rows(&state, &scope.id, rows).await?;
    Ok(StatusCode::OK)
}

/// Deletes rows in one transaction, then their files.
async fn delete_rows(state: &AppState, space: &SpaceId, rows: Vec<PackageRow>) -> ApiResult<()> {
    let txn = state.store.conn().begin().await?;
    let mut keys = Vec::new();
    for row in rows {
        if let Some(deleted) =
            packages::delete(&txn, space, &row.package_id_lower, &row.version_normalized).await?
        {
            keys.push(deleted.blob_key);
        }
    }
    txn.commit().await?;
    for key in keys {
        delete_blob(state, &key).await;
    }
    Ok(())
}

/// `GET /api/{space}/packages/{packageId}/{version}/delta-signature`: delta uploads are not
/// built, and Octopus's clients treat 404 as "no base version" and upload the whole file.
async fn delta_signature(_: SpaceScope) -> ApiError {
    ApiError::not_found(
        "a delta signature (delta compression is not available: upload the whole package)",
    )
}

// ---------------------------------------------------------------------------------------------
// Build information

/// `POST /api/{space}/build-information?overwriteMode=`.
async fn push_build_information(
    State(state): State<AppState>,
    scope: SpaceScope,
    params: Params,
    JsonBody(command): JsonBody<CreateBuildInformationCommand>,
) -> ApiResult<(StatusCode, Json<BuildInformation>)> {
    let mode = overwrite_mode(&params)?;
    let package_id = PackageId::parse(command.package_id.trim())
        .map_err(|err| ApiError::invalid_field("PackageId", err.to_string()))?;
    let version = PackageVersion::parse(command.version.trim())
        .map_err(|err| ApiError::invalid_field("Version", err.to_string()))?;
    let information = command.octopus_build_information.ok_or_else(|| {
        ApiError::invalid_field(
            "OctopusBuildInformation",
            "the build information is required",
        )
    })?;
    let new = NewBuildInformation {
        package_id: package_id.as_str().to_owned(),
        version: version.as_str().to_owned(),
        version_normalized: version.normalized(),
        data: serde_json::to_value(&information).map_err(ApiError::internal)?,
    };
    let txn = state.store.begin().await?;
    let existing = packages::find_build_information(
        &txn,
        &scope.id,
        &package_id.lower(),
        &version.normalized(),
    )
    .await?;
    let (status, row) = match (mode.decide(existing.is_some()), existing) {
        (PushDecision::Refuse, _) => {
            return Err(ApiError::bad_request(
                BUILD_INFORMATION_EXISTS,
                vec![format!(
                    "{package_id} version {version} already has build information. Push with overwriteMode=OverwriteExisting to replace it."
                )],
            ));
        }
        (PushDecision::KeepExisting, Some(row)) => (StatusCode::OK, row),
        (PushDecision::Replace, Some(_)) => (
            StatusCode::CREATED,
            packages::replace_build_information(&txn, &scope.id, new)
                .await?
                .ok_or_else(|| ApiError::internal("build information vanished while locked"))?,
        ),
        _ => (
            StatusCode::CREATED,
            packages::insert_build_information(&txn, &scope.id, new).await?,
        ),
    };
    txn.commit().await?;
    Ok((status, Json(present_build_information(&scope.id, row)?)))
}

/// `GET /api/{space}/build-information{?packageId,filter,latest,skip,take}`.
async fn list_build_information(
    State(state): State<AppState>,
    scope: SpaceScope,
    params: Params,
) -> ApiResult<Json<Collection<BuildInformation>>> {
    let (skip, take) = params.paging()?;
    let latest = params.flag("latest")?.unwrap_or(false);
    let exact = params.get("packageId").map(str::to_ascii_lowercase);
    let mut rows = packages::list_build_information(
        state.store.conn(),
        &scope.id,
        params.get("filter"),
        exact.as_deref(),
    )
    .await?;
    rows.sort_by(|left, right| {
        left.package_id_lower
            .cmp(&right.package_id_lower)
            .then_with(|| compare_versions(&right.version, &left.version))
    });
    if latest {
        rows = newest_only(rows, |row| &row.package_id_lower);
    }
    let total = rows.len() as u64;
    let items = page_of(rows, skip, take)
        .into_iter()
        .map(|row| present_build_information(&scope.id, row))
        .collect::<ApiResult<Vec<_>>>()?;
    let path = format!("{}/build-information", space_prefix(scope.id.as_str()));
    let template = format!("{path}{{/id}}{{?packageId,filter,latest,skip,take}}");
    Ok(Json(Collection::page(
        "BuildInformation",
        items,
        total,
        skip,
        take,
        &path,
        &template,
    )))
}

/// `GET /api/{space}/build-information/{id}`.
async fn get_build_information(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<Json<BuildInformation>> {
    let id = path.get("id")?;
    let row = packages::get_build_information(state.store.conn(), &scope.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("build information '{id}'")))?;
    Ok(Json(present_build_information(&scope.id, row)?))
}

fn present_build_information(
    space: &SpaceId,
    row: BuildInformationRow,
) -> ApiResult<BuildInformation> {
    let information: OctopusBuildInformation = serde_json::from_str(&row.data).map_err(|err| {
        ApiError::internal(format!(
            "stored build information {} is corrupt: {err}",
            row.id
        ))
    })?;
    Ok(BuildInformation {
        links: links([(
            "Self",
            format!(
                "{}/build-information/{}",
                space_prefix(space.as_str()),
                row.id
            ),
        )]),
        id: row.id,
        package_id: row.package_id,
        version: row.version,
        branch: information.branch,
        build_environment: information.build_environment,
        build_number: information.build_number,
        build_url: information.build_url,
        commits: information.commits,
        vcs_type: information.vcs_type,
        vcs_root: information.vcs_root,
        vcs_commit_number: information.vcs_commit_number,
        vcs_commit_url: None,
        issue_tracker_id: None,
        work_items: Vec::new(),
        incomplete_data_warning: None,
        created: cuttle_wire::dates::format(&row.created),
    })
}
