//! [`WatermarkGate`]: refuse new work above a high watermark until the depth falls below a low
//! one.

use crate::error::InvalidConfig;

/// A queue's watermarks: enqueue is refused once the depth would exceed `high`, and accepted
/// again once it is at or below `low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Watermarks {
    /// Above this depth, enqueues are refused.
    pub high: u64,
    /// Once refusing, enqueues are accepted again only at or below this depth.
    pub low: u64,
}

impl Watermarks {
    /// Checks that `low < high`; the error names the bad one.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.high == 0 {
            return Err(InvalidConfig::new("high", "must be at least 1"));
        }
        if self.low >= self.high {
            return Err(InvalidConfig::new(
                "low",
                "must be below the high watermark",
            ));
        }
        Ok(())
    }
}

/// Hysteresis between two watermarks. Without it a queue hovering at one threshold would flip
/// between accepting and refusing on every enqueue; with it, a producer that was pushed back
/// stays pushed back until the workers have made real room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkGate {
    marks: Watermarks,
    /// True from crossing `high` until the depth is back at or below `low`.
    refusing: bool,
}

impl WatermarkGate {
    /// A gate that accepts until the depth first crosses `high`.
    pub fn new(marks: Watermarks) -> Result<Self, InvalidConfig> {
        marks.validate()?;
        Ok(WatermarkGate {
            marks,
            refusing: false,
        })
    }

    /// The watermarks.
    pub fn marks(&self) -> Watermarks {
        self.marks
    }

    /// True while enqueues are refused.
    pub fn is_refusing(&self) -> bool {
        self.refusing
    }

    /// Decides whether `adding` more tasks may join a queue that holds `depth`; updates the
    /// hysteresis state.
    pub fn admit(&mut self, depth: u64, adding: u64) -> bool {
        if self.refusing && depth <= self.marks.low {
            self.refusing = false;
        }
        if !self.refusing && depth.saturating_add(adding) > self.marks.high {
            self.refusing = true;
        }
        !self.refusing
    }

    /// Lets the gate notice a depth change without an enqueue (workers drained the queue), so
    /// [`WatermarkGate::is_refusing`] reports the truth.
    pub fn observe(&mut self, depth: u64) {
        if self.refusing && depth <= self.marks.low {
            self.refusing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> WatermarkGate {
        WatermarkGate::new(Watermarks { high: 100, low: 60 }).unwrap()
    }

    #[test]
    fn refuses_above_high_until_below_low() {
        let mut g = gate();
        assert!(
            g.admit(90, 10),
            "exactly at the high mark is still accepted"
        );
        assert!(!g.admit(100, 1));
        assert!(!g.admit(80, 1), "between the marks, still refusing");
        assert!(!g.admit(61, 1));
        assert!(g.admit(60, 1), "at the low mark, accepting again");
        assert!(g.admit(80, 1), "and keeps accepting up to the high mark");
    }

    #[test]
    fn observing_a_drained_queue_reopens_the_gate() {
        let mut g = gate();
        assert!(!g.admit(101, 1));
        g.observe(70);
        assert!(g.is_refusing());
        g.observe(10);
        assert!(!g.is_refusing());
    }

    #[test]
    fn low_must_be_below_high() {
        assert_eq!(
            WatermarkGate::new(Watermarks { high: 10, low: 10 })
                .unwrap_err()
                .field,
            "low"
        );
        assert_eq!(
            WatermarkGate::new(Watermarks { high: 0, low: 0 })
                .unwrap_err()
                .field,
            "high"
        );
    }
}
