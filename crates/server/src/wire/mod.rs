//! The JSON wire types of API v1: what requests carry and responses return.
//!
//! These types are the API's contract. They are separate from the core types on purpose: the
//! core types may change shape for the brokers' sake, the wire may not change without a new
//! API version. Each wire type converts to and from its core counterpart in this module, with
//! struct literals on both sides, so a field added to a core type does not compile until the
//! wire says how it travels. The OpenAPI document is generated from these types
//! ([`utoipa::ToSchema`]), and the client crate (`floodway-client`) uses the same types, so
//! server, spec and client cannot drift apart.
//!
//! Conventions:
//!
//! - **Durations** are written as strings such as `"250ms"`, `"30s"`, `"5m"`; requests may also
//!   give a whole number of milliseconds. They have millisecond precision.
//! - **Times** are whole milliseconds since the Unix epoch, on the server's clock.
//! - **Payloads** are JSON (`payload`, kept byte for byte as sent), or any bytes as base64
//!   (`payload_base64`). A response carries a task's payload as `payload` when its bytes are a
//!   JSON text, else as `payload_base64`.
//! - **Leases** are presented as an opaque token (`"<task id>.<fence>"`), which the server
//!   checks against the task's current fence: a stale or expired lease is refused.
//! - Calls on leases and cancellations take one item (`{"lease": ...}`, answered with the
//!   item's result or an error status) or a batch (`{"leases": [...]}`, answered with one
//!   result per item, in order, where single items may be refused without affecting the rest).

mod error;
mod lease;
mod queue;
mod task;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{KnownFormat, RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

pub use error::{ErrorBody, ErrorCode, ErrorDetails, ErrorObject};
pub use lease::{
    EffectBatch, EffectRecord, ExtendBatch, ExtendOne, ExtendResult, ExtendResults, FailBatch,
    FailOutcome, FailResult, FailResults, Failure, LEASE_DEFAULT, Lease, LeaseBatch, LeaseOne,
    LeaseResult, LeaseResults, ReserveRequest, ReserveResponse, ReservedTask, refusal_error,
    refusal_from_error,
};
pub use queue::{
    CountResponse, DEAD_SELECTOR_LIMIT_DEFAULT, DeadCounts, DeadSelector, OverflowPolicy,
    QueueConfig, QueueList, QueueStats, QueueTotals, RateLimit, StartLatency, StateCounts,
    Watermarks,
};
pub use task::{
    CancelBatch, CancelOne, DeadReason, EnqueueRequest, EnqueueResponse, EnqueuedTask, Jitter,
    RetryPolicy, Task, TaskBatch, TaskList, TaskSpec, TaskState, decode_payload, encode_payload,
};

/// Why a wire value does not convert to its core counterpart; `field` names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct WireError {
    /// The field, as the API names it.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl WireError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        WireError {
            field,
            reason: reason.into(),
        }
    }
}

/// The broker behind the API, as `GET /v1/broker` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerInfo {
    /// The optional behaviours the broker has.
    pub capabilities: Capabilities,
}

/// Optional behaviours a broker may lack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Tasks of higher priority are reserved before lower ones.
    pub priorities: bool,
    /// Tasks sharing a partition key run one at a time in enqueue order.
    pub partition_fifo: bool,
}

impl Capabilities {
    /// The wire form of `capabilities`.
    pub fn from_core(capabilities: floodway_core::Capabilities) -> Self {
        let floodway_core::Capabilities {
            priorities,
            partition_fifo,
        } = capabilities;
        Capabilities {
            priorities,
            partition_fifo,
        }
    }

    /// The core capabilities.
    pub fn into_core(self) -> floodway_core::Capabilities {
        let Capabilities {
            priorities,
            partition_fifo,
        } = self;
        floodway_core::Capabilities {
            priorities,
            partition_fifo,
        }
    }
}

/// A duration on the wire: written as `"30s"`, `"250ms"`; read from such a string or from a
/// whole number of milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct WireDuration(pub Duration);

impl Serialize for WireDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        floodway_core::duration::serde::serialize(&self.0, serializer)
    }
}

/// The longest duration the wire carries: 100 years, in milliseconds. Every duration the API
/// accepts is far shorter (a schedule reaches a year ahead at most); this bound only keeps the
/// document and the parser in agreement.
pub const WIRE_DURATION_MAX_MILLIS: u64 = 100 * 366 * 24 * 3600 * 1000;

impl<'de> Deserialize<'de> for WireDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let duration = floodway_core::duration::serde::deserialize(deserializer)?;
        if duration.as_millis() > u128::from(WIRE_DURATION_MAX_MILLIS) {
            return Err(serde::de::Error::custom(
                "a duration must be at most 100 years",
            ));
        }
        Ok(WireDuration(duration))
    }
}

impl From<Duration> for WireDuration {
    fn from(duration: Duration) -> Self {
        WireDuration(duration)
    }
}

impl From<WireDuration> for Duration {
    fn from(duration: WireDuration) -> Self {
        duration.0
    }
}

impl PartialSchema for WireDuration {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::String))
                    .pattern(Some(r"^[0-9]{1,15}(ms|s|m|h|d)$"))
                    .examples([serde_json::json!("30s")]),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::Integer))
                    .minimum(Some(0))
                    .maximum(Some(WIRE_DURATION_MAX_MILLIS)),
            )
            .description(Some(
                "A duration: a whole number and a unit (ms, s, m, h, d), such as \"30s\", or \
                 a whole number of milliseconds. Responses use the string form.",
            ))
            .into()
    }
}

impl ToSchema for WireDuration {
    fn name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
}

/// The token a worker presents to act on a reserved task: the task's id and the fence of the
/// reservation, written `"<task id>.<fence>"`. Only the current fence of an unexpired lease is
/// accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseToken(pub floodway_core::LeaseRef);

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0.task_id, self.0.fence.0)
    }
}

impl FromStr for LeaseToken {
    type Err = WireError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || {
            WireError::new(
                "lease",
                format!(
                    "malformed lease token {:?}: expected \"<task id>.<fence>\" as returned by reserve",
                    s.chars().take(80).collect::<String>()
                ),
            )
        };
        let (id, fence) = s.rsplit_once('.').ok_or_else(malformed)?;
        let task_id = id.parse().map_err(|_| malformed())?;
        let fence = fence.parse().map_err(|_| malformed())?;
        Ok(LeaseToken(floodway_core::LeaseRef {
            task_id,
            fence: floodway_core::Fence(fence),
        }))
    }
}

impl Serialize for LeaseToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LeaseToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl PartialSchema for LeaseToken {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .pattern(Some(
                r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\.[0-9]{1,19}$",
            ))
            .description(Some(
                "A lease token as returned by reserve: \"<task id>.<fence>\".",
            ))
            .into()
    }
}

impl ToSchema for LeaseToken {
    fn name() -> std::borrow::Cow<'static, str> {
        "LeaseToken".into()
    }
}

/// A UUID in its hyphenated form.
pub(crate) const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// A queue name: what [`floodway_core::QueueName`] accepts.
pub(crate) const QUEUE_NAME_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,128}$";

/// The schema of a task id: a UUID string.
pub(crate) fn task_id_schema() -> Schema {
    task_id_object().into()
}

fn task_id_object() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .pattern(Some(UUID_PATTERN))
}

/// The schema of a list of task ids.
pub(crate) fn task_ids_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(task_id_object())
        .max_items(Some(floodway_core::limits::BATCH_SIZE_MAX))
        .build()
}

/// The schema of an optional list of task ids: the list, or `null`.
pub(crate) fn nullable_task_ids_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(task_id_object())
        .max_items(Some(floodway_core::limits::BATCH_SIZE_MAX))
        .build()
}

/// The schema of an optional queue name: the name, or `null`.
pub(crate) fn nullable_queue_name_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(QUEUE_NAME_PATTERN))
        .min_length(Some(1))
        .max_length(Some(floodway_core::limits::QUEUE_NAME_LEN_MAX))
        .into()
}

/// The schema of a queue name.
pub(crate) fn queue_name_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(QUEUE_NAME_PATTERN))
        .min_length(Some(1))
        .max_length(Some(floodway_core::limits::QUEUE_NAME_LEN_MAX))
        .into()
}

/// The schema of an optional point in time: milliseconds since the Unix epoch, or `null`.
pub(crate) fn nullable_timestamp_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(0))
        .description(Some("Milliseconds since the Unix epoch, or null."))
        .into()
}

/// The schema of a point in time: milliseconds since the Unix epoch.
pub(crate) fn timestamp_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .minimum(Some(0))
        .description(Some("Milliseconds since the Unix epoch."))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodway_core::{Fence, LeaseRef, TaskId};

    #[test]
    fn lease_tokens_round_trip_and_malformed_ones_are_named() {
        let token = LeaseToken(LeaseRef {
            task_id: TaskId::from_u128(0x0193_4f6e_8c4a_7b1e_9a4d_2f1c_3b5a_6d7e),
            fence: Fence(42),
        });
        let text = token.to_string();
        assert_eq!(text, "01934f6e-8c4a-7b1e-9a4d-2f1c3b5a6d7e.42");
        assert_eq!(text.parse::<LeaseToken>().unwrap(), token);
        for bad in [
            "",
            "x.1",
            "01934f6e-8c4a-7b1e-9a4d-2f1c3b5a6d7e",
            "01934f6e-8c4a-7b1e-9a4d-2f1c3b5a6d7e.-1",
        ] {
            let err = bad.parse::<LeaseToken>().unwrap_err();
            assert_eq!(err.field, "lease");
        }
    }

    #[test]
    fn durations_read_strings_and_millis_and_write_strings() {
        let d: WireDuration = serde_json::from_str("\"30s\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(30));
        let d: WireDuration = serde_json::from_str("1500").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1500ms\"");
        assert!(serde_json::from_str::<WireDuration>("\"soon\"").is_err());
    }
}
