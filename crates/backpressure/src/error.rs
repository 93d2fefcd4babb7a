//! [`InvalidConfig`]: the one error of this crate, for settings that cannot work.

/// A setting of a backpressure mechanism that cannot work; `field` names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidConfig {
    /// The setting, as configuration names it (`rate`, `burst`, `low`, ...).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidConfig {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}
