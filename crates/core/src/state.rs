//! The task state machine: [`TaskState`], the [`Event`]s that move a task, and [`transition`],
//! the one function every broker calls to decide where an event takes a task.
//!
//! docs/state_machine.md draws the same table. A broker never assigns a state by hand: it asks
//! [`transition`], so an illegal move (acking a task that is not active, replaying one that is
//! not dead) is refused the same way everywhere.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its run-at time. Enqueue puts a delayed task here; [`Event::Due`] moves it
    /// to `Ready` when the broker's clock reaches run-at.
    Scheduled,
    /// Waiting for a worker. Enqueue, [`Event::Due`], [`Event::Release`], an expired lease or
    /// [`Event::Replay`] puts a task here; [`Event::Reserve`] takes it to `Active`.
    Ready,
    /// Leased to one worker until the lease expires. [`Event::Reserve`] puts a task here; the
    /// holder leaves it with ack, fail or release, or the broker takes it back when the lease
    /// expires.
    Active,
    /// Waiting out a retry backoff after a failed attempt. [`Event::Fail`] with attempts left
    /// puts a task here; [`Event::Due`] moves it to `Ready` when the backoff has passed.
    Retrying,
    /// Done: a worker acked it. Terminal; the broker keeps the record for inspection for a
    /// bounded time or count.
    Completed,
    /// In the dead letters, with a [`DeadReason`]. Only [`Event::Replay`] takes it out (to
    /// `Ready`); purge deletes it.
    Dead,
    /// Withdrawn before it ran. Terminal.
    Cancelled,
}

impl TaskState {
    /// Every state, in declaration order; `ALL[s.index()] == s`.
    pub const ALL: [TaskState; 7] = [
        TaskState::Scheduled,
        TaskState::Ready,
        TaskState::Active,
        TaskState::Retrying,
        TaskState::Completed,
        TaskState::Dead,
        TaskState::Cancelled,
    ];

    /// A dense index, for per-state arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The state's name as the API and CLI write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskState::Scheduled => "scheduled",
            TaskState::Ready => "ready",
            TaskState::Active => "active",
            TaskState::Retrying => "retrying",
            TaskState::Completed => "completed",
            TaskState::Dead => "dead",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// True for states a task never leaves on its own: completed, dead, cancelled.
    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Dead | TaskState::Cancelled
        )
    }

    /// True for states that count toward a queue's length: the task waits to run.
    pub const fn is_waiting(self) -> bool {
        matches!(
            self,
            TaskState::Scheduled | TaskState::Ready | TaskState::Retrying
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string does not name a state or a dead reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {input:?}; expected one of: {expected}")]
pub struct UnknownName {
    /// What was being parsed ("state", "dead reason").
    pub what: &'static str,
    /// The text given, cut to 64 characters.
    pub input: String,
    /// The accepted names, comma-separated.
    pub expected: &'static str,
}

impl FromStr for TaskState {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "state",
                input: s.chars().take(64).collect(),
                expected: "scheduled, ready, active, retrying, completed, dead, cancelled",
            })
    }
}

/// Why a task is in the dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// Its last allowed attempt failed, or its lease expired on the last attempt.
    MaxAttempts,
    /// Its time to live passed before a worker started it.
    Expired,
    /// The queue was full and its overflow policy drops the oldest waiting task.
    Overflow,
    /// Its handler said retrying cannot help.
    PermanentFailure,
}

impl DeadReason {
    /// Every reason, in declaration order; `ALL[r.index()] == r`.
    pub const ALL: [DeadReason; 4] = [
        DeadReason::MaxAttempts,
        DeadReason::Expired,
        DeadReason::Overflow,
        DeadReason::PermanentFailure,
    ];

    /// A dense index, for per-reason arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The reason's name as the API and CLI write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadReason::MaxAttempts => "max_attempts",
            DeadReason::Expired => "expired",
            DeadReason::Overflow => "overflow",
            DeadReason::PermanentFailure => "permanent_failure",
        }
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeadReason {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeadReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "dead reason",
                input: s.chars().take(64).collect(),
                expected: "max_attempts, expired, overflow, permanent_failure",
            })
    }
}

/// Something that happens to a task. Brokers raise events; [`transition`] says where they lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The broker's clock reached the task's run-at time.
    Due,
    /// A worker reserved the task: it gets a lease with a new fence.
    Reserve,
    /// The lease holder extended its lease.
    Extend,
    /// The lease holder finished the task.
    Ack,
    /// The lease holder's attempt failed. `retry` is true when the task has attempts left and
    /// the failure is not permanent; the broker decides it with [`crate::Task::failure_disposition`].
    Fail {
        /// Whether the task goes to `Retrying` (true) or to the dead letters (false).
        retry: bool,
    },
    /// The lease holder gave the task back unrun (graceful shutdown); no attempt is spent.
    Release,
    /// The lease expired before the holder finished. `retry` is false when that was the last
    /// allowed attempt.
    LeaseExpired {
        /// Whether the task goes back to `Ready` (true) or to the dead letters (false).
        retry: bool,
    },
    /// The task's time to live passed while it waited.
    Expire,
    /// The queue overflowed and this, its oldest waiting task, is dropped to the dead letters.
    Overflow,
    /// An operator or producer withdrew the task before it ran.
    Cancel,
    /// An operator replays a dead letter.
    Replay,
}

impl Event {
    /// One event of each shape, with both values of every flag; used to test [`transition`]
    /// exhaustively.
    pub const ALL: [Event; 13] = [
        Event::Due,
        Event::Reserve,
        Event::Extend,
        Event::Ack,
        Event::Fail { retry: true },
        Event::Fail { retry: false },
        Event::Release,
        Event::LeaseExpired { retry: true },
        Event::LeaseExpired { retry: false },
        Event::Expire,
        Event::Overflow,
        Event::Cancel,
        Event::Replay,
    ];
}

/// An event that cannot happen to a task in its current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {state} task cannot take event {event:?}")]
pub struct IllegalTransition {
    /// The state the task is in.
    pub state: TaskState,
    /// The event that was refused.
    pub event: Event,
}

/// Where `event` takes a task in state `from`, or why it cannot happen.
///
/// This is the whole state machine; docs/state_machine.md draws it. Every broker calls it for
/// every change of state, so the legal moves are the same on every backend.
pub fn transition(from: TaskState, event: Event) -> Result<TaskState, IllegalTransition> {
    use Event as E;
    use TaskState as S;
    let to = match (from, event) {
        (S::Scheduled | S::Retrying, E::Due) => S::Ready,
        (S::Ready, E::Reserve) => S::Active,
        (S::Active, E::Extend) => S::Active,
        (S::Active, E::Ack) => S::Completed,
        (S::Active, E::Fail { retry: true }) => S::Retrying,
        (S::Active, E::Fail { retry: false }) => S::Dead,
        (S::Active, E::Release) => S::Ready,
        (S::Active, E::LeaseExpired { retry: true }) => S::Ready,
        (S::Active, E::LeaseExpired { retry: false }) => S::Dead,
        (S::Scheduled | S::Ready | S::Retrying, E::Expire) => S::Dead,
        (S::Scheduled | S::Ready | S::Retrying, E::Overflow) => S::Dead,
        (S::Scheduled | S::Ready | S::Retrying, E::Cancel) => S::Cancelled,
        (S::Dead, E::Replay) => S::Ready,
        (state, event) => return Err(IllegalTransition { state, event }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;
    use TaskState as S;

    /// The expected table, written out independently of [`transition`]'s match: every legal
    /// (state, event) pair and its target. Every pair not listed must be refused.
    const LEGAL: &[(TaskState, Event, TaskState)] = &[
        (S::Scheduled, E::Due, S::Ready),
        (S::Retrying, E::Due, S::Ready),
        (S::Ready, E::Reserve, S::Active),
        (S::Active, E::Extend, S::Active),
        (S::Active, E::Ack, S::Completed),
        (S::Active, E::Fail { retry: true }, S::Retrying),
        (S::Active, E::Fail { retry: false }, S::Dead),
        (S::Active, E::Release, S::Ready),
        (S::Active, E::LeaseExpired { retry: true }, S::Ready),
        (S::Active, E::LeaseExpired { retry: false }, S::Dead),
        (S::Scheduled, E::Expire, S::Dead),
        (S::Ready, E::Expire, S::Dead),
        (S::Retrying, E::Expire, S::Dead),
        (S::Scheduled, E::Overflow, S::Dead),
        (S::Ready, E::Overflow, S::Dead),
        (S::Retrying, E::Overflow, S::Dead),
        (S::Scheduled, E::Cancel, S::Cancelled),
        (S::Ready, E::Cancel, S::Cancelled),
        (S::Retrying, E::Cancel, S::Cancelled),
        (S::Dead, E::Replay, S::Ready),
    ];

    #[test]
    fn every_state_and_event_pair_matches_the_table() {
        let mut legal_seen = 0;
        for state in TaskState::ALL {
            for event in Event::ALL {
                let expected = LEGAL
                    .iter()
                    .find(|(s, e, _)| *s == state && *e == event)
                    .map(|(_, _, to)| *to);
                match (transition(state, event), expected) {
                    (Ok(to), Some(want)) => {
                        assert_eq!(to, want, "{state} + {event:?}");
                        legal_seen += 1;
                    }
                    (Err(err), None) => {
                        assert_eq!(err, IllegalTransition { state, event });
                    }
                    (got, want) => panic!("{state} + {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
        assert_eq!(legal_seen, LEGAL.len());
    }

    #[test]
    fn finished_states_take_no_event_but_replay_of_dead() {
        for state in TaskState::ALL.into_iter().filter(|s| s.is_finished()) {
            for event in Event::ALL {
                let allowed = state == S::Dead && event == E::Replay;
                assert_eq!(
                    transition(state, event).is_ok(),
                    allowed,
                    "{state} + {event:?}"
                );
            }
        }
    }

    #[test]
    fn indexes_are_dense() {
        for (i, state) in TaskState::ALL.into_iter().enumerate() {
            assert_eq!(state.index(), i);
            assert_eq!(state.as_str().parse::<TaskState>().unwrap(), state);
        }
        for (i, reason) in DeadReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i);
            assert_eq!(reason.as_str().parse::<DeadReason>().unwrap(), reason);
        }
    }

    #[test]
    fn unknown_names_list_the_choices() {
        let err = "finished".parse::<TaskState>().unwrap_err();
        assert!(err.to_string().contains("\"finished\""));
        assert!(err.to_string().contains("completed"));
        assert!("late".parse::<DeadReason>().is_err());
    }
}
