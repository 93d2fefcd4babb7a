//! [`retry_delay`]: how long a pushed-back producer waits before trying again.

use std::time::Duration;

/// The wait before retry number `attempt` (1-based) of a call that was refused.
///
/// With a Retry-After `hint` from the broker, the wait is the hint plus up to half of it again,
/// drawn with `random` in `[0, 1)`: every producer honours the hint, and producers pushed back
/// together do not return together. Without a hint it is exponential backoff from `base`,
/// capped at `cap`, with full jitter. Either way the result is at most `cap`.
pub fn retry_delay(
    attempt: u32,
    hint: Option<Duration>,
    base: Duration,
    cap: Duration,
    random: f64,
) -> Duration {
    let random = random.clamp(0.0, 1.0);
    let wait = match hint {
        Some(hint) => hint.mul_f64(1.0 + random / 2.0),
        None => {
            let exponent = attempt.saturating_sub(1).min(32) as i32;
            let ceiling = base.as_secs_f64() * 2f64.powi(exponent);
            Duration::from_secs_f64(ceiling.min(cap.as_secs_f64()) * random)
        }
    };
    wait.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    #[test]
    fn a_hint_is_honoured_with_up_to_half_again_of_jitter() {
        let hint = Some(Duration::from_secs(2));
        assert_eq!(retry_delay(1, hint, BASE, CAP, 0.0), Duration::from_secs(2));
        assert_eq!(
            retry_delay(1, hint, BASE, CAP, 0.999_999).as_millis(),
            2_999
        );
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(60)), BASE, CAP, 0.5),
            CAP
        );
    }

    #[test]
    fn without_a_hint_backoff_is_exponential_with_full_jitter() {
        assert_eq!(
            retry_delay(1, None, BASE, CAP, 0.5),
            Duration::from_millis(50)
        );
        assert_eq!(
            retry_delay(4, None, BASE, CAP, 0.5),
            Duration::from_millis(400)
        );
        assert_eq!(retry_delay(40, None, BASE, CAP, 1.0), CAP);
        assert_eq!(retry_delay(3, None, BASE, CAP, 0.0), Duration::ZERO);
    }
}
