//! Workers over HTTP: reserve (long poll) and the lease calls, ack, fail, extend, release and
//! recording side effects, each taking one lease or a batch and fenced by the lease token.
//!
//! Each broker call runs in a span named for it (`reserve`, `ack`, `fail`, `extend`,
//! `release`, `effects`; level debug) with its batch's size, inside the request's span.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use floodway_core::{LeaseRef, Refusal};
use serde::Serialize;
use tracing::Instrument;

use super::{authorize_tasks, check_batch};
use crate::app::{App, AppState};
use crate::auth::Caller;
use crate::config::Scope;
use crate::error::ApiError;
use crate::extract::{JsonBytes, OneOrBatch, QueuePath, parse, parse_one_or_batch};
use crate::wire::{
    EffectBatch, EffectRecord, ErrorBody, ExtendBatch, ExtendOne, ExtendResult, ExtendResults,
    FailBatch, FailResult, FailResults, Failure, LEASE_DEFAULT, LeaseBatch, LeaseOne, LeaseResult,
    LeaseResults, ReserveRequest, ReserveResponse, ReservedTask,
};

const CONSUME: &[Scope] = &[Scope::Consume, Scope::Admin];

/// Reserve tasks (long poll).
///
/// Leases up to `max` ready tasks, highest priority and oldest first, waiting up to `wait` for
/// one when none is ready (the server may answer sooner, with none). Each task comes with a
/// lease: present its token to ack, fail, extend or release the task before `expires_at`.
/// A paused or unknown queue yields no tasks.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/reserve",
    tag = "leases",
    params(super::QueueParam),
    request_body(content = Option<ReserveRequest>, content_type = "application/json",
        description = "All fields are optional; an empty body reserves one task without waiting."),
    responses(
        (status = 200, description = "The reserved tasks, possibly none.", body = ReserveResponse),
        (status = 400, description = "The body is not valid JSON.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `consume` on this queue.", body = ErrorBody),
        (status = 413, description = "The body is too large.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 422, description = "A field is invalid; `details.field` names it.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn reserve(
    State(app): State<AppState>,
    caller: Caller,
    QueuePath(queue): QueuePath,
    JsonBytes(body): JsonBytes,
) -> Result<Json<ReserveResponse>, ApiError> {
    app.auth.require(caller, CONSUME, queue.as_str())?;
    let request: ReserveRequest = parse(&body)?;
    let mut request = request.into_core(queue);
    request.validate()?;
    // Within the core's limits, the server's own: a long poll ends before its request times
    // out, and no answer carries more than the server's batch size.
    request.wait = request.wait.min(app.limits.reserve_wait_max);
    request.max = request.max.min(app.limits.batch_size_max);
    let span = tracing::debug_span!(
        "reserve",
        queue = %request.queue,
        max = request.max,
        tasks = tracing::field::Empty
    );
    let reservations = app.broker.reserve(request).instrument(span.clone()).await?;
    span.record("tasks", reservations.len());
    Ok(Json(ReserveResponse {
        tasks: reservations.iter().map(ReservedTask::from_core).collect(),
    }))
}

/// Complete tasks.
///
/// The body is `{"lease": token}` (answered with the result, or 404/409 when refused) or
/// `{"leases": [...]}` (one result per lease, in order; a stale or expired lease is refused
/// without affecting the others). The response comes once the completions are durable.
#[utoipa::path(
    post,
    path = "/v1/leases/ack",
    tag = "leases",
    request_body(content = LeaseRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One lease: the task is completed. Several: one result each.", body = LeaseAnswer),
        (status = 400, description = "The body is not valid JSON.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `consume` on a task's queue.", body = ErrorBody),
        (status = 404, description = "One lease: no such task.", body = ErrorBody),
        (status = 409, description = "One lease: it is stale or expired, or the task is not active.", body = ErrorBody),
        (status = 413, description = "Too many leases, or the body is too large.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 422, description = "A lease token is malformed.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable; the outcome is unknown.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn ack(
    State(app): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let (leases, one) = leases(&app, caller, &body).await?;
    let results = app
        .broker
        .ack(&leases)
        .instrument(tracing::debug_span!("ack", leases = leases.len()))
        .await?;
    answer_leases(one, &results)
}

/// Give tasks back unrun: they return to ready without spending an attempt.
///
/// Takes one lease or a batch, like ack.
#[utoipa::path(
    post,
    path = "/v1/leases/release",
    tag = "leases",
    request_body(content = LeaseRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One lease: the task is ready again. Several: one result each.", body = LeaseAnswer),
        (status = 400, description = "The body is not valid JSON.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `consume` on a task's queue.", body = ErrorBody),
        (status = 404, description = "One lease: no such task.", body = ErrorBody),
        (status = 409, description = "One lease: it is stale or expired, or the task is not active.", body = ErrorBody),
        (status = 413, description = "Too many leases, or the body is too large.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 422, description = "A lease token is malformed.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable; the outcome is unknown.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn release(
    State(app): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let (leases, one) = leases(&app, caller, &body).await?;
    let results = app
        .broker
        .release(&leases)
        .instrument(tracing::debug_span!("release", leases = leases.len()))
        .await?;
    answer_leases(one, &results)
}

/// The leases of an ack or release body, authorized; and whether it was the one-lease form.
async fn leases(app: &App, caller: Caller, body: &[u8]) -> Result<(Vec<LeaseRef>, bool), ApiError> {
    let (leases, one) = match parse_one_or_batch::<LeaseOne, LeaseBatch>(body, "leases")? {
        OneOrBatch::One(LeaseOne { lease }) => (vec![lease.0], true),
        OneOrBatch::Batch(LeaseBatch { leases }) => {
            (leases.into_iter().map(|l| l.0).collect::<Vec<_>>(), false)
        }
    };
    check_batch(app, leases.len())?;
    authorize_tasks(app, caller, CONSUME, leases.iter().map(|l| l.task_id)).await?;
    Ok((leases, one))
}

fn answer_leases(one: bool, results: &[Result<(), Refusal>]) -> Result<Response, ApiError> {
    if one {
        return match &results[0] {
            Ok(()) => Ok(Json(LeaseResult::from_core(&Ok(()))).into_response()),
            Err(refusal) => Err(ApiError::refused(refusal)),
        };
    }
    Ok(Json(LeaseResults {
        results: results.iter().map(LeaseResult::from_core).collect(),
    })
    .into_response())
}

/// Report failed attempts.
///
/// Each task is retried after its backoff (or `retry_after`) if attempts remain, or goes to
/// the dead letters (`max_attempts`, or `permanent_failure` when `permanent`). The body is one
/// failure, or `{"failures": [...]}`.
#[utoipa::path(
    post,
    path = "/v1/leases/fail",
    tag = "leases",
    request_body(content = FailRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One failure: where the task went. Several: one result each.", body = FailAnswer),
        (status = 400, description = "The body is not valid JSON.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `consume` on a task's queue.", body = ErrorBody),
        (status = 404, description = "One failure: no such task.", body = ErrorBody),
        (status = 409, description = "One failure: the lease is stale or expired, or the task is not active.", body = ErrorBody),
        (status = 413, description = "Too many failures, or the body is too large.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 422, description = "A field is invalid.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable; the outcome is unknown.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn fail(
    State(app): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let (failures, one) = match parse_one_or_batch::<Failure, FailBatch>(&body, "failures")? {
        OneOrBatch::One(failure) => (vec![failure], true),
        OneOrBatch::Batch(FailBatch { failures }) => (failures, false),
    };
    check_batch(&app, failures.len())?;
    let failures = failures
        .into_iter()
        .enumerate()
        .map(|(i, failure)| {
            failure.into_core().map_err(|error| {
                let field = if one {
                    error.field.to_owned()
                } else {
                    format!("failures[{i}].{}", error.field)
                };
                ApiError::invalid_field(field, error.reason)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    authorize_tasks(
        &app,
        caller,
        CONSUME,
        failures.iter().map(|f| f.lease.task_id),
    )
    .await?;
    let span = tracing::debug_span!("fail", leases = failures.len());
    let results = app.broker.fail(failures).instrument(span).await?;
    if one {
        return match &results[0] {
            Ok(outcome) => Ok(Json(FailResult::from_core(&Ok(*outcome))).into_response()),
            Err(refusal) => Err(ApiError::refused(refusal)),
        };
    }
    Ok(Json(FailResults {
        results: results.iter().map(FailResult::from_core).collect(),
    })
    .into_response())
}

/// Extend leases to `duration` from now (heartbeat).
///
/// The body is `{"lease": token, "duration": "30s"}` or `{"leases": [...], "duration": ...}`.
/// A refused extension means the lease is lost: stop working on the task.
#[utoipa::path(
    post,
    path = "/v1/leases/extend",
    tag = "leases",
    request_body(content = ExtendRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One lease: the new lease. Several: one result each.", body = ExtendAnswer),
        (status = 400, description = "The body is not valid JSON.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `consume` on a task's queue.", body = ErrorBody),
        (status = 404, description = "One lease: no such task.", body = ErrorBody),
        (status = 409, description = "One lease: it is stale or expired, or the task is not active.", body = ErrorBody),
        (status = 413, description = "Too many leases, or the body is too large.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 422, description = "A field is invalid.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable; the outcome is unknown.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn extend(
    State(app): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let (leases, duration, one) =
        match parse_one_or_batch::<ExtendOne, ExtendBatch>(&body, "leases")? {
            OneOrBatch::One(ExtendOne { lease, duration }) => (vec![lease.0], duration, true),
            OneOrBatch::Batch(ExtendBatch { leases, duration }) => {
                (leases.into_iter().map(|l| l.0).collect(), duration, false)
            }
        };
    check_batch(&app, leases.len())?;
    authorize_tasks(&app, caller, CONSUME, leases.iter().map(|l| l.task_id)).await?;
    let duration = duration.map_or(LEASE_DEFAULT, Into::into);
    let results = app
        .broker
        .extend(&leases, duration)
        .instrument(tracing::debug_span!("extend", leases = leases.len()))
        .await?;
    if one {
        return match &results[0] {
            Ok(lease) => Ok(Json(ExtendResult::from_core(&Ok(*lease))).into_response()),
            Err(refusal) => Err(ApiError::refused(refusal)),
        };
    }
    Ok(Json(ExtendResults {
        results: results.iter().map(ExtendResult::from_core).collect(),
    })
    .into_response())
}

/// Record side effects performed under a lease.
///
/// A handler that calls out to the world (charges a card, sends an email) records each effect
/// with its result as soon as it is done. An attempt that runs after a crash or a lost lease
/// finds the key in the task's `effects` and skips the effect, using the recorded result.
/// Fenced like extend: only the task's current, unexpired lease may record, so a worker that
/// lost its lease records nothing. Recording a key again replaces its result; a task holds at
/// most 32 keys (a call that would exceed it is refused whole, 422 `effects`).
///
/// The body is `{"lease": token, "key": "charge", "result": "..."}` (answered with the result,
/// or 404/409 when refused) or `{"effects": [...]}` (one result per item, in order; a stale
/// or expired lease is refused without affecting the others). The response comes once the
/// effects are durable.
#[utoipa::path(
    post,
    path = "/v1/leases/effects",
    tag = "leases",
    request_body(content = EffectRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One effect: it is recorded. Several: one result each.", body = LeaseAnswer),
        (status = 400, description = "The body is not valid JSON.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks `consume` on a task's queue.", body = ErrorBody),
        (status = 404, description = "One effect: no such task.", body = ErrorBody),
        (status = 409, description = "One effect: the lease is stale or expired, or the task is not active.", body = ErrorBody),
        (status = 413, description = "Too many effects, or the body is too large.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 422, description = "A field is invalid (a lease token, a key, a result too long, or too many effects on one task); `details.field` names it.", body = ErrorBody),
        (status = 429, description = "The token's rate limit is exhausted.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The broker is unavailable; the outcome is unknown.", body = ErrorBody),
        (status = 507, description = "The broker's storage is full; nothing was changed.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn record_effects(
    State(app): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let (records, one) = match parse_one_or_batch::<EffectRecord, EffectBatch>(&body, "effects")? {
        OneOrBatch::One(record) => (vec![record], true),
        OneOrBatch::Batch(EffectBatch { effects }) => (effects, false),
    };
    check_batch(&app, records.len())?;
    let records = records
        .into_iter()
        .map(EffectRecord::into_core)
        .collect::<Vec<_>>();
    // Checked here as well as by the broker, so that an error in a batch names its item.
    for (i, record) in records.iter().enumerate() {
        record.validate().map_err(|error| match error {
            floodway_core::BrokerError::Invalid { field, reason } if !one => {
                ApiError::invalid_field(format!("effects[{i}].{field}"), reason)
            }
            other => other.into(),
        })?;
    }
    authorize_tasks(
        &app,
        caller,
        CONSUME,
        records.iter().map(|r| r.lease.task_id),
    )
    .await?;
    let span = tracing::debug_span!("effects", leases = records.len());
    let results = app.broker.record_effects(records).instrument(span).await?;
    answer_leases(one, &results)
}

/// The body of ack and release: one lease, or several.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(
    dead_code,
    reason = "a schema only; the body is parsed as LeaseOne or LeaseBatch"
)]
pub(crate) enum LeaseRequest {
    /// Several: `{"leases": [...]}`.
    Batch(LeaseBatch),
    /// One: `{"lease": token}`.
    One(LeaseOne),
}

/// The body of record effects: one effect, or several.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(
    dead_code,
    reason = "a schema only; the body is parsed as EffectRecord or EffectBatch"
)]
pub(crate) enum EffectRequest {
    /// Several: `{"effects": [...]}`.
    Batch(EffectBatch),
    /// One: `{"lease": token, "key": ..., "result": ...}`.
    One(EffectRecord),
}

/// The answer to ack, release and record effects: one result, or one per item.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "a schema only")]
pub(crate) enum LeaseAnswer {
    /// Several: one result per lease, in order.
    Batch(LeaseResults),
    /// One: the result.
    One(LeaseResult),
}

/// The body of fail: one failure, or several.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(
    dead_code,
    reason = "a schema only; the body is parsed as Failure or FailBatch"
)]
pub(crate) enum FailRequest {
    /// Several: `{"failures": [...]}`.
    Batch(FailBatch),
    /// One failure.
    One(Failure),
}

/// The answer to fail: one result, or one per failure.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "a schema only")]
pub(crate) enum FailAnswer {
    /// Several: one result per failure, in order.
    Batch(FailResults),
    /// One: the result.
    One(FailResult),
}

/// The body of extend: one lease, or several.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(
    dead_code,
    reason = "a schema only; the body is parsed as ExtendOne or ExtendBatch"
)]
pub(crate) enum ExtendRequest {
    /// Several: `{"leases": [...], "duration": ...}`.
    Batch(ExtendBatch),
    /// One: `{"lease": token, "duration": ...}`.
    One(ExtendOne),
}

/// The answer to extend: one result, or one per lease.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "a schema only")]
pub(crate) enum ExtendAnswer {
    /// Several: one result per lease, in order.
    Batch(ExtendResults),
    /// One: the result.
    One(ExtendResult),
}
