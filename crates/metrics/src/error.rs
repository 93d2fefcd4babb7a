//! [`MetricsError`]: why a registration or a scrape failed.

/// Why a registration or a scrape failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// The registry holds [`crate::limits::SOURCES_MAX`] live sources already.
    #[error("the metrics registry holds {max} sources already")]
    TooManySources {
        /// The limit.
        max: usize,
    },
    /// A source could not be read (a broker that does not answer, say); the scrape fails as
    /// a whole rather than export a partial picture as if it were complete.
    #[error("metrics source {source_name} failed: {reason}")]
    Source {
        /// What the source is (`broker`, say).
        source_name: String,
        /// What went wrong.
        reason: String,
    },
}

impl MetricsError {
    /// True when scraping again later may succeed (a source that failed).
    pub fn is_retryable(&self) -> bool {
        matches!(self, MetricsError::Source { .. })
    }
}
