//! [`Options`] for opening the embedded broker, and the [`Durability`] setting.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use floodway_core::{Clock, SystemClock};

/// When an acknowledged change is safe from what.
///
/// Every setting survives a crash of the floodway process (the change has been written to the
/// operating system before the call returns); they differ in what survives a crash of the
/// machine or a power loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// A call returns only after its change is on disk (`fdatasync`). Concurrent calls share
    /// one sync (group commit). Nothing acknowledged is lost to a power loss. The default.
    #[default]
    Fsync,
    /// A call returns once its change is written to the OS; the log is synced at this interval.
    /// A power loss can lose up to one interval of acknowledged changes.
    Interval(Duration),
    /// A call returns once its change is written to the OS; the log is synced only when the
    /// broker closes or compacts. A power loss can lose whatever the OS had not yet written.
    Off,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Fsync => f.write_str("fsync"),
            Durability::Interval(every) => {
                write!(f, "interval:{}", floodway_core::duration::format(*every))
            }
            Durability::Off => f.write_str("off"),
        }
    }
}

/// Why a string is not a durability setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid durability {0:?}: expected fsync, interval:<duration> (e.g. interval:100ms) or off"
)]
pub struct InvalidDurability(pub String);

impl FromStr for Durability {
    type Err = InvalidDurability;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidDurability(s.chars().take(64).collect());
        match s {
            "fsync" => Ok(Durability::Fsync),
            "off" => Ok(Durability::Off),
            _ => {
                let every = s.strip_prefix("interval:").ok_or_else(invalid)?;
                let every = floodway_core::duration::parse(every).map_err(|_| invalid())?;
                if every.is_zero() {
                    return Err(invalid());
                }
                Ok(Durability::Interval(every))
            }
        }
    }
}

/// How to open an [`crate::EmbeddedBroker`].
#[derive(Clone)]
pub struct Options {
    /// When changes are synced to disk; see [`Durability`].
    pub durability: Durability,
    /// Where the broker reads the time. Tests pass a [`floodway_core::ManualClock`].
    pub clock: Arc<dyn Clock>,
    /// How often a background thread promotes due tasks, expires TTLs and reaps expired leases
    /// when no call does it. `None` turns the thread off (tests that drive time by hand do,
    /// so that only their own calls move tasks).
    pub maintenance_interval: Option<Duration>,
    /// Compaction (a snapshot that replaces the logs before it) starts once the data files are
    /// larger than this and larger than twice the live state, that is once at least half of
    /// what is on disk is garbage. Each compaction rewrites the live state, so this bounds both
    /// the space the files take and the work compaction does per byte logged.
    pub compaction_bytes_min: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Fsync,
            clock: Arc::new(SystemClock::new()),
            maintenance_interval: Some(Duration::from_millis(100)),
            compaction_bytes_min: 64 * 1024 * 1024,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("durability", &self.durability)
            .field("maintenance_interval", &self.maintenance_interval)
            .field("compaction_bytes_min", &self.compaction_bytes_min)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_parses_and_displays() {
        for text in ["fsync", "off", "interval:100ms", "interval:2s"] {
            let parsed: Durability = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(
            "interval:250ms".parse::<Durability>().unwrap(),
            Durability::Interval(Duration::from_millis(250))
        );
    }

    #[test]
    fn bad_durability_is_named() {
        for bad in ["", "sync", "interval:", "interval:0s", "interval:fast"] {
            let err = bad.parse::<Durability>().unwrap_err();
            assert!(err.to_string().contains("invalid durability"), "{bad}");
        }
    }
}
