//! [`WorkerError`]: what can go wrong when building or steering a worker.
//!
//! Running a worker cannot fail: broker errors inside its loops are logged and retried, and
//! handler failures are outcomes. So errors come only from a bad configuration, or from a
//! handle used after its worker stopped.

/// Why a worker could not be built, or a handle call could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A builder setting is invalid; `setting` names it, `reason` says what is wrong.
    #[error("invalid worker setting {setting}: {reason}")]
    Invalid {
        /// The builder method that set it (`queue`, `handler`, `lease_duration`, ...).
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The worker has stopped (its `run` returned, or it was dropped without running).
    #[error("the worker has stopped")]
    Stopped,
}

impl WorkerError {
    /// An [`WorkerError::Invalid`] for `setting`.
    pub(crate) fn invalid(setting: &'static str, reason: impl Into<String>) -> Self {
        WorkerError::Invalid {
            setting,
            reason: reason.into(),
        }
    }
}
