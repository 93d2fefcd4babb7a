//! Idempotent side effects: [`TaskContext::effect`] runs a side effect once per task and key,
//! across attempts, by recording its result on the task in the broker.
//!
//! The handler's context reaches the broker through [`ContextBroker`], the two calls it needs
//! behind a trait object, so that [`TaskContext`] stays free of the broker's type.
//!
//! An effect goes through three steps:
//! 1. **Look up**: if the task already holds a result for the key (an earlier attempt, or an
//!    earlier call in this one, recorded it), decode and return it; nothing runs.
//! 2. **Confirm**: extend the attempt's lease. The broker fences it, so a zombie (a worker
//!    that stalled past its lease while another reserved the task) is refused here, before it
//!    performs anything.
//! 3. **Perform and record**: run the effect, then record its result with
//!    [`Broker::record_effects`], fenced the same way.
//!
//! Broker calls that fail as a whole are tried again with backoff, like the completer's; a
//! refusal is final and means the lease is lost.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use floodway_core::{Broker, BrokerError, EffectRecord, Lease, LeaseRef, Refusal, limits};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backoff::Backoff;
use crate::context::TaskContext;

/// Why [`TaskContext::effect`] returned no result. `E` is the effect's own error.
///
/// Propagate it from the handler (with `?`, or as an [`crate::Outcome::retry`]): whatever the
/// variant, the effect has no recorded result, so the attempt must not complete the task as
/// if it had. After [`EffectError::LeaseLost`] the worker discards the attempt's result anyway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EffectError<E> {
    /// The effect ran and failed; nothing was recorded, so a later attempt runs it again.
    #[error("the effect failed: {0}")]
    Failed(E),
    /// The broker refused the attempt's lease: another worker may hold the task now. If the
    /// refusal came before the effect, it did not run; if it came when recording (the lease
    /// was lost while the effect ran), it ran but is not recorded, and the task's next holder
    /// will run it again. The worker stops the attempt and discards its result.
    #[error("the lease of the attempt was lost ({0}); the effect is not recorded")]
    LeaseLost(Refusal),
    /// The broker could not be reached to confirm the lease (the effect did not run) or to
    /// record the result (it ran but is not recorded).
    #[error("the broker could not confirm the lease or record the effect: {0}")]
    Broker(#[source] BrokerError),
    /// The key or the result breaks a limit, or a recorded result does not decode as the
    /// type asked for. The key or the existing records decide this before the effect runs;
    /// only a result too large for the broker is found after it ran.
    #[error("effect {key:?}: {reason}")]
    Invalid {
        /// The effect's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl<E> EffectError<E> {
    /// True when the attempt lost its lease; the worker discards its result.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, EffectError::LeaseLost(_))
    }

    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        EffectError::Invalid {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

impl TaskContext {
    /// Performs a side effect once per task and `key`, across attempts: charging a card,
    /// sending an email, calling a webhook.
    ///
    /// If an earlier attempt (or an earlier call in this one) recorded a result under `key`,
    /// that result is returned, decoded from JSON, and `perform` does not run. Otherwise the
    /// worker first confirms with the broker that this attempt still holds the task's lease
    /// (so a worker that lost its lease is refused before it acts), runs `perform`, records
    /// its result on the task in the broker, and returns it. `perform` gets the effect's
    /// idempotency key, `"{task id}:{key}"`, the same in every attempt.
    ///
    /// # What it guarantees
    ///
    /// - An effect whose result is recorded is never performed again for this task, by any
    ///   later attempt on any worker, even after a crash, a lost lease or a replay from the
    ///   dead letters.
    /// - A worker that lost its lease performs no effect: the broker refuses it first, and the
    ///   call returns [`EffectError::LeaseLost`].
    /// - What it cannot guarantee: if the worker crashes, or loses its lease, after `perform`
    ///   but before the result is recorded, the next attempt performs the effect again. Close
    ///   that window by passing the idempotency key to the downstream when it accepts one
    ///   (Stripe's `Idempotency-Key` header, an email provider's message id, a unique
    ///   constraint), so the downstream itself recognises the repeat.
    ///
    /// An error from `perform` is returned as [`EffectError::Failed`] and nothing is recorded:
    /// the effect runs again on the next attempt. A successful result is recorded whatever it
    /// says, so an answer that must not be repeated (a declined card) belongs in `Ok`. A
    /// result is kept as JSON of at most [`limits::EFFECT_RESULT_MAX`] bytes (record an id,
    /// not a document), a key is 1 to [`limits::KEY_LEN_MAX`] bytes, and a task holds at most
    /// [`limits::EFFECTS_MAX`] keys.
    ///
    /// Each new effect costs two broker calls (confirm and record), so use it for effects
    /// worth that, not for every line of a handler.
    ///
    /// ```no_run
    /// # use floodway_worker::{EffectError, Outcome, TaskContext};
    /// # #[derive(serde::Deserialize)] struct Order { id: u64, cents: u64 }
    /// # async fn charge(idempotency_key: &str, cents: u64) -> Result<String, std::io::Error> { Ok(String::new()) }
    /// # async fn email(receipt: &str) -> Result<(), std::io::Error> { Ok(()) }
    /// async fn handle(ctx: TaskContext, order: Order) -> Result<Outcome, EffectError<std::io::Error>> {
    ///     let receipt: String = ctx
    ///         .effect("charge", |key| async move { charge(&key, order.cents).await })
    ///         .await?;
    ///     // If sending the email fails, the retry skips the charge and reuses its receipt.
    ///     ctx.effect("email", |_| async move { email(&receipt).await }).await?;
    ///     Ok(Outcome::Complete)
    /// }
    /// ```
    pub async fn effect<T, E, F, Fut>(&self, key: &str, perform: F) -> Result<T, EffectError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if key.is_empty() || key.len() > limits::KEY_LEN_MAX {
            return Err(EffectError::invalid(
                key,
                format!("a key must be 1 to {} bytes", limits::KEY_LEN_MAX),
            ));
        }
        match self.recorded_effect(key) {
            Some(result) => {
                return serde_json::from_str(&result).map_err(|error| {
                    EffectError::invalid(
                        key,
                        format!(
                            "the recorded result does not decode as {}: {error}",
                            std::any::type_name::<T>()
                        ),
                    )
                });
            }
            None if self.recorded_effects() >= limits::EFFECTS_MAX => {
                return Err(EffectError::invalid(
                    key,
                    format!(
                        "the task already holds {} effects, the most it may",
                        limits::EFFECTS_MAX
                    ),
                ));
            }
            None => {}
        }
        let lease = self.lease();
        if let Some(refusal) = self.lost_to() {
            return Err(EffectError::LeaseLost(refusal));
        }

        match self.broker().confirm(lease).await {
            Ok(Ok(extended)) => self.extended(extended.expires_at),
            Ok(Err(refusal)) => {
                self.lose_lease(refusal);
                return Err(EffectError::LeaseLost(refusal));
            }
            Err(error) => return Err(EffectError::Broker(error)),
        }

        let value = perform(format!("{}:{key}", self.id()))
            .await
            .map_err(EffectError::Failed)?;
        let result = serde_json::to_string(&value).map_err(|error| {
            EffectError::invalid(key, format!("the result does not encode as JSON: {error}"))
        })?;
        if result.len() > limits::EFFECT_RESULT_MAX {
            tracing::error!(
                task = %self.id(),
                key,
                len = result.len(),
                "an effect ran but its result is too large to record; a retry repeats it"
            );
            return Err(EffectError::invalid(
                key,
                format!(
                    "the result is {} bytes of JSON; at most {} can be recorded, so the effect ran but a retry will repeat it",
                    result.len(),
                    limits::EFFECT_RESULT_MAX
                ),
            ));
        }
        let record = EffectRecord {
            lease,
            key: key.to_owned(),
            result,
        };
        match self.broker().record(record.clone()).await {
            Ok(Ok(())) => {
                self.remember_effect(record.key, record.result);
                Ok(value)
            }
            Ok(Err(refusal)) => {
                tracing::warn!(
                    task = %self.id(),
                    key,
                    %refusal,
                    "an effect ran but the lease was lost before it was recorded"
                );
                self.lose_lease(refusal);
                Err(EffectError::LeaseLost(refusal))
            }
            Err(error) => {
                tracing::error!(
                    task = %self.id(),
                    key,
                    %error,
                    "an effect ran but could not be recorded; a retry repeats it"
                );
                Err(EffectError::Broker(error))
            }
        }
    }
}

/// A boxed future, for the object-safe [`ContextBroker`].
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The broker calls a [`TaskContext`] makes, behind a trait object.
pub(crate) trait ContextBroker: Send + Sync + fmt::Debug {
    /// Extends one lease by the worker's lease duration: the broker's word that the attempt
    /// still holds the task.
    fn confirm(
        &self,
        lease: LeaseRef,
    ) -> BoxFuture<'_, Result<Result<Lease, Refusal>, BrokerError>>;

    /// Records one effect on its task.
    fn record(
        &self,
        record: EffectRecord,
    ) -> BoxFuture<'_, Result<Result<(), Refusal>, BrokerError>>;
}

/// [`ContextBroker`] over a real broker.
pub(crate) struct BrokerCalls<B> {
    pub(crate) broker: Arc<B>,
    /// The lease duration an extension asks for; the worker's.
    pub(crate) lease: Duration,
}

impl<B> fmt::Debug for BrokerCalls<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerCalls")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl<B: Broker> ContextBroker for BrokerCalls<B> {
    fn confirm(
        &self,
        lease: LeaseRef,
    ) -> BoxFuture<'_, Result<Result<Lease, Refusal>, BrokerError>> {
        Box::pin(async move {
            let leases = [lease];
            let results = retrying("extend", || self.broker.extend(&leases, self.lease)).await?;
            single(results)
        })
    }

    fn record(
        &self,
        record: EffectRecord,
    ) -> BoxFuture<'_, Result<Result<(), Refusal>, BrokerError>> {
        Box::pin(async move {
            // Recording a key again replaces its result with the same one, so a retry after a
            // call that took effect unseen is harmless.
            let results = retrying("record_effects", || {
                self.broker.record_effects(vec![record.clone()])
            })
            .await?;
            single(results)
        })
    }
}

/// The one result of a one-item batch.
fn single<T>(results: Vec<Result<T, Refusal>>) -> Result<Result<T, Refusal>, BrokerError> {
    let count = results.len();
    let mut results = results.into_iter();
    match (results.next(), count) {
        (Some(result), 1) => Ok(result),
        _ => Err(BrokerError::Unavailable(format!(
            "the broker answered a one-item batch with {count} results"
        ))),
    }
}

/// Makes a call, trying again with backoff while the broker is unavailable, up to
/// [`crate::limits::SETTLE_ATTEMPTS_MAX`] times.
async fn retrying<T, F, Fut>(what: &'static str, mut call: F) -> Result<T, BrokerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BrokerError>>,
{
    let mut backoff = Backoff::default();
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(answer) => return Ok(answer),
            Err(error) if error.is_retryable() && attempt < crate::limits::SETTLE_ATTEMPTS_MAX => {
                let wait = backoff.next_wait();
                tracing::warn!(%error, attempt, ?wait, "{what} for an effect failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}
