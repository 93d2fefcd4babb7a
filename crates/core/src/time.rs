//! Broker time: [`Timestamp`] and the [`Clock`] a broker reads it from.
//!
//! Every time a broker judges (is a lease expired? is a scheduled task due?) comes from the
//! broker's own clock, never from a worker's, so a worker with a wrong clock cannot steal or
//! keep leases. Brokers take the clock as a value so that tests drive time by hand with
//! [`ManualClock`] instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time, in milliseconds since the Unix epoch.
///
/// Milliseconds are fine enough for leases and schedules and keep stored records small.
/// Arithmetic saturates: adding a huge duration gives [`Timestamp::MAX`], never a wrap.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The latest representable time.
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// The timestamp `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `duration`, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// How long after `earlier` this time is; zero if it is not later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// The wall-clock time now, as the system reports it.
    pub fn now_system() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Timestamp {
    /// Formats as RFC 3339 in UTC with milliseconds, e.g. `2026-11-22T08:15:30.123Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0 % 1000;
        let secs = self.0 / 1000;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days as i64);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date.
///
/// Howard Hinnant's algorithm (<https://howardhinnant.github.io/date_algorithms.html>), exact
/// for every date a `u64` of milliseconds can reach.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Where a broker reads the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time. Successive calls never go backwards.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock, made monotonic.
///
/// Wall time is what survives a restart (a lease expiry stored on disk must mean the same
/// after reopening), but wall clocks can step backwards; this clock never reports a time
/// earlier than one it already reported, so a backwards step cannot revive an expired lease.
#[derive(Debug, Default)]
pub struct SystemClock {
    /// The latest time reported, in milliseconds; only ever grows.
    last: AtomicU64,
}

impl SystemClock {
    /// A clock that reads the system time.
    pub fn new() -> Self {
        SystemClock::default()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        monotonic(&self.last, Timestamp::now_system())
    }
}

/// The later of `wall` and the latest time `last` holds, which it then holds.
fn monotonic(last: &AtomicU64, wall: Timestamp) -> Timestamp {
    let previous = last.fetch_max(wall.0, Ordering::Relaxed);
    Timestamp(previous.max(wall.0))
}

/// Any wall clock made monotonic by [`SystemClock`]'s rule: it never reports a time earlier
/// than one it already reported.
///
/// [`SystemClock`] is this over the system's wall clock. Tests give it a wall clock they step
/// back and forth, to see what a broker does when an operator or NTP steps the system clock.
pub struct MonotonicClock<W> {
    /// Reads the wall clock.
    wall: W,
    /// The latest time reported, in milliseconds; only ever grows.
    last: AtomicU64,
}

impl<W: Fn() -> Timestamp + Send + Sync + 'static> MonotonicClock<W> {
    /// A monotonic clock over `wall`.
    pub fn new(wall: W) -> Self {
        MonotonicClock {
            wall,
            last: AtomicU64::new(0),
        }
    }
}

impl<W: Fn() -> Timestamp + Send + Sync + 'static> Clock for MonotonicClock<W> {
    fn now(&self) -> Timestamp {
        monotonic(&self.last, (self.wall)())
    }
}

impl<W> fmt::Debug for MonotonicClock<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonotonicClock")
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

/// A clock that moves only when told to, for deterministic tests.
///
/// Cloning gives another handle on the same time, so a test keeps one handle and gives the
/// broker the other.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: Arc::new(AtomicU64::new(start.as_millis())),
        }
    }

    /// Moves the clock forward by `duration`.
    pub fn advance(&self, duration: Duration) {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.now.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_rfc3339_utc() {
        assert_eq!(Timestamp::ZERO.to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp::from_millis(1_795_338_930_123).to_string(),
            "2026-11-22T09:15:30.123Z"
        );
        assert_eq!(
            Timestamp::from_millis(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(
            Timestamp::MAX.saturating_add(Duration::from_secs(1)),
            Timestamp::MAX
        );
        assert_eq!(
            Timestamp::from_millis(5).saturating_since(Timestamp::from_millis(9)),
            Duration::ZERO
        );
    }

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new(Timestamp::from_millis(1000));
        let handle = clock.clone();
        assert_eq!(clock.now(), Timestamp::from_millis(1000));
        handle.advance(Duration::from_millis(250));
        assert_eq!(clock.now(), Timestamp::from_millis(1250));
    }

    #[test]
    fn a_stepped_wall_clock_stands_still_until_it_catches_up() {
        let wall = Arc::new(AtomicU64::new(10_000));
        let source = wall.clone();
        let clock = MonotonicClock::new(move || Timestamp(source.load(Ordering::SeqCst)));
        assert_eq!(clock.now(), Timestamp(10_000));
        wall.store(4_000, Ordering::SeqCst);
        assert_eq!(clock.now(), Timestamp(10_000), "a step back is not seen");
        wall.store(9_999, Ordering::SeqCst);
        assert_eq!(clock.now(), Timestamp(10_000));
        wall.store(10_500, Ordering::SeqCst);
        assert_eq!(clock.now(), Timestamp(10_500), "moves again once caught up");
        wall.store(70_500, Ordering::SeqCst);
        assert_eq!(
            clock.now(),
            Timestamp(70_500),
            "a step forward is taken whole"
        );
    }

    #[test]
    fn system_clock_never_goes_backwards() {
        let clock = SystemClock::new();
        clock.last.store(u64::MAX - 1, Ordering::Relaxed);
        assert_eq!(clock.now(), Timestamp::from_millis(u64::MAX - 1));
    }
}
