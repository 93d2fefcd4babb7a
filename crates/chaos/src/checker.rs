//! The checker: from a run's history and the broker's final word on each task, what was lost,
//! duplicated or falsely acknowledged, and how long the system took to recover from each
//! fault.
//!
//! Definitions (docs/chaos.md has the same list):
//! - **attempted**: enqueue operations invoked; **acknowledged**: answered `Ok` with a task id;
//!   **failed**: refused for certain; **indeterminate**: no answer before the retry limit.
//! - **lost**: acknowledged, yet at the end neither completed nor dead-lettered (the drain
//!   gave every acknowledged task time to finish with every fault healed).
//! - **false acknowledgements**: an answer `Ok` for what did not happen: an acknowledged
//!   enqueue whose id the broker does not know at the end, or a task the broker reports
//!   completed that no worker finished (no `done` in any history).
//! - **duplicated deliveries**: executions beyond the first of a task that is not poison
//!   (allowed by at-least-once delivery; counted to show what faults cost).
//! - **duplicate effects**: operations whose effect the downstream applied more than once,
//!   i.e. under more than one idempotency key. With the idempotency helper this must be 0.
//! - **phantom executions**: executions of a task id that was never acknowledged to the
//!   producer of its operation (the task of an enqueue whose answer was lost).
//! - **redelivery time** (worker faults): for each task the faulted worker was running, from
//!   the fault until the task started on another worker.
//! - **recovery time** of a fault: from its healing until the system works again, i.e. until
//!   both an enqueue is acknowledged and a handler starts after it (only a start, if the
//!   producers had finished by then). A fault that stops nothing (a clock jump) has none.

use std::collections::{BTreeMap, HashMap, HashSet};

use floodway_core::{TaskId, TaskState};
use serde::Serialize;

use crate::history::{Event, Fault, Op, OpOutcome};

/// What the checker found in one run.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Verdict {
    /// Enqueue operations invoked.
    pub attempted: u64,
    /// Answered `Ok`.
    pub acknowledged: u64,
    /// Refused for certain.
    pub failed: u64,
    /// Unanswered within the retry limit.
    pub indeterminate: u64,
    /// Tries beyond the first, over every operation: what the faults cost the producers.
    pub enqueue_retries: u64,
    /// Acknowledged tasks completed.
    pub completed: u64,
    /// Acknowledged tasks dead-lettered (poison or not).
    pub dead_lettered: u64,
    /// Poison tasks acknowledged.
    pub poison: u64,
    /// Poison tasks that ended in the dead letters.
    pub poison_quarantined: u64,
    /// Tasks that are not poison yet ended in the dead letters (ran out of attempts under
    /// faults).
    pub dead_not_poison: u64,
    /// Acknowledged but neither completed nor dead-lettered.
    pub lost: u64,
    /// Ids of the lost tasks (at most 20), to look at.
    pub lost_ids: Vec<TaskId>,
    /// `Ok` answers for what did not happen.
    pub false_acks: u64,
    /// Handler executions in all.
    pub executions: u64,
    /// Executions beyond the first of tasks that are not poison.
    pub duplicated_deliveries: u64,
    /// Operations whose effect was applied more than once.
    pub duplicate_effects: u64,
    /// Effects applied.
    pub effects_applied: u64,
    /// Executions of task ids never acknowledged to their producer.
    pub phantom_executions: u64,
    /// Faults injected.
    pub faults: u64,
    /// Recovery time of each fault whose recovery could be seen, in milliseconds, in the
    /// order injected.
    pub recovery_ms: Vec<u64>,
    /// Faults healed when no work was left to show a recovery (the producers had finished
    /// and no handler started again); a system that did not recover shows as lost tasks.
    pub unmeasured_recoveries: u64,
    /// For worker faults (kill-worker, pause-worker): per task the faulted worker was running
    /// when the fault began, the milliseconds until it started again elsewhere (its lease had
    /// to expire first).
    pub redelivery_ms: Vec<u64>,
}

impl Verdict {
    /// True when the run kept every promise: nothing lost, no false acknowledgement, no
    /// duplicate effect.
    pub fn safe(&self) -> bool {
        self.lost == 0 && self.false_acks == 0 && self.duplicate_effects == 0
    }
}

/// The broker's final word on the tasks: the state of each id it knows.
pub type FinalStates = HashMap<TaskId, TaskState>;

/// Checks a run.
pub fn check(
    ops: &[Op],
    events: &[(String, Event)],
    applied: &BTreeMap<u64, Vec<String>>,
    states: &FinalStates,
    faults: &[Fault],
) -> Verdict {
    let mut verdict = Verdict {
        attempted: ops.len() as u64,
        faults: faults.len() as u64,
        ..Verdict::default()
    };
    let mut acknowledged: HashMap<TaskId, &Op> = HashMap::new();
    let mut poison_ops: HashSet<u64> = HashSet::new();
    for op in ops {
        if op.poison {
            poison_ops.insert(op.op);
        }
        verdict.enqueue_retries += u64::from(op.tries.saturating_sub(1));
        match &op.outcome {
            OpOutcome::Ok { id, .. } => {
                verdict.acknowledged += 1;
                acknowledged.insert(*id, op);
            }
            OpOutcome::Failed { .. } => verdict.failed += 1,
            OpOutcome::Indeterminate { .. } => verdict.indeterminate += 1,
        }
    }

    let mut starts: HashMap<TaskId, u64> = HashMap::new();
    let mut finished: HashSet<TaskId> = HashSet::new();
    let mut phantom_ids: HashSet<TaskId> = HashSet::new();
    let mut start_times: Vec<u64> = Vec::new();
    for (_, event) in events {
        match event {
            Event::Start { id, op, at_ms, .. } => {
                verdict.executions += 1;
                start_times.push(*at_ms);
                if !poison_ops.contains(op) {
                    *starts.entry(*id).or_default() += 1;
                }
                if !acknowledged.contains_key(id) {
                    phantom_ids.insert(*id);
                    verdict.phantom_executions += 1;
                }
            }
            Event::Done { id, .. } => {
                finished.insert(*id);
            }
        }
    }
    verdict.duplicated_deliveries = starts.values().map(|n| n.saturating_sub(1)).sum();

    for (id, op) in &acknowledged {
        if op.poison {
            verdict.poison += 1;
        }
        match states.get(id) {
            None => {
                // The broker does not know a task it acknowledged.
                verdict.false_acks += 1;
                verdict.lost += 1;
                if verdict.lost_ids.len() < 20 {
                    verdict.lost_ids.push(*id);
                }
            }
            Some(TaskState::Completed) => {
                verdict.completed += 1;
                if !finished.contains(id) {
                    verdict.false_acks += 1;
                }
            }
            Some(TaskState::Dead) => {
                verdict.dead_lettered += 1;
                if op.poison {
                    verdict.poison_quarantined += 1;
                } else {
                    verdict.dead_not_poison += 1;
                }
            }
            Some(_) => {
                verdict.lost += 1;
                if verdict.lost_ids.len() < 20 {
                    verdict.lost_ids.push(*id);
                }
            }
        }
    }
    // A phantom task the broker says completed must have been finished by someone too.
    for id in &phantom_ids {
        if states.get(id) == Some(&TaskState::Completed) && !finished.contains(id) {
            verdict.false_acks += 1;
        }
    }

    verdict.effects_applied = applied.values().map(|keys| keys.len() as u64).sum();
    verdict.duplicate_effects = applied.values().filter(|keys| keys.len() > 1).count() as u64;

    let mut ack_times: Vec<u64> = ops
        .iter()
        .filter_map(|op| match op.outcome {
            OpOutcome::Ok { at_ms, .. } => Some(at_ms),
            _ => None,
        })
        .collect();
    ack_times.sort_unstable();
    start_times.sort_unstable();
    let first_after = |times: &[u64], t: u64| -> Option<u64> {
        let i = times.partition_point(|&x| x < t);
        times.get(i).copied()
    };
    verdict.redelivery_ms = redeliveries(events, faults);

    let last_invoked = ops.iter().map(|op| op.invoked_ms).max().unwrap_or(0);
    for fault in faults.iter().filter(|f| f.outage) {
        let start = first_after(&start_times, fault.healed_ms);
        let recovered = if fault.healed_ms <= last_invoked {
            // Producers were still sending: the system works again once an enqueue is
            // acknowledged and a handler starts.
            first_after(&ack_times, fault.healed_ms)
                .zip(start)
                .map(|(ack, start)| ack.max(start))
        } else {
            start
        };
        match recovered {
            Some(at) => verdict.recovery_ms.push(at - fault.healed_ms),
            None => verdict.unmeasured_recoveries += 1,
        }
    }
    verdict
}

/// For each fault naming a worker slot ("kill-worker 1", "pause-worker 0"): the tasks that
/// slot had started but not finished when the fault began, and how long each took to start
/// again on another slot.
fn redeliveries(events: &[(String, Event)], faults: &[Fault]) -> Vec<u64> {
    let mut redelivery = Vec::new();
    for fault in faults {
        let Some(slot) = fault
            .what
            .strip_prefix("kill-worker ")
            .or_else(|| fault.what.strip_prefix("pause-worker "))
        else {
            continue;
        };
        let slot = format!("worker-{slot}");
        let done: HashSet<(TaskId, u32)> = events
            .iter()
            .filter(|(name, _)| *name == slot)
            .filter_map(|(_, e)| match e {
                Event::Done { id, attempt, .. } => Some((*id, *attempt)),
                Event::Start { .. } => None,
            })
            .collect();
        let running: Vec<TaskId> = events
            .iter()
            .filter(|(name, _)| *name == slot)
            .filter_map(|(_, e)| match e {
                Event::Start {
                    id, attempt, at_ms, ..
                } if *at_ms <= fault.start_ms && !done.contains(&(*id, *attempt)) => Some(*id),
                _ => None,
            })
            .collect();
        for id in running {
            let again = events
                .iter()
                .filter(|(name, _)| *name != slot)
                .filter_map(|(_, e)| match e {
                    Event::Start {
                        id: other, at_ms, ..
                    } if *other == id && *at_ms > fault.start_ms => Some(*at_ms),
                    _ => None,
                })
                .min();
            if let Some(at) = again {
                redelivery.push(at - fault.start_ms);
            }
        }
    }
    redelivery
}

/// The `q`-quantile (0 to 1) of `values` by the nearest-rank method; `None` when empty.
pub fn quantile(values: &[u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> TaskId {
        TaskId::from_u128((0x0193_0000_0000_7000_8000_0000_0000_0000_u128) | n)
    }

    fn op(n: u64, outcome: OpOutcome) -> Op {
        Op {
            op: n,
            key: format!("k{n}"),
            poison: false,
            invoked_ms: 0,
            tries: 1,
            outcome,
        }
    }

    fn ok(n: u128, at_ms: u64) -> OpOutcome {
        OpOutcome::Ok { id: id(n), at_ms }
    }

    fn start(n: u128, at_ms: u64) -> (String, Event) {
        let event = Event::Start {
            id: id(n),
            op: n as u64,
            attempt: 1,
            fence: 1,
            at_ms,
        };
        ("worker-0".into(), event)
    }

    fn done(n: u128) -> (String, Event) {
        let event = Event::Done {
            id: id(n),
            attempt: 1,
            at_ms: 0,
        };
        ("worker-0".into(), event)
    }

    #[test]
    fn a_clean_history_is_safe_and_each_anomaly_is_counted() {
        let ops = vec![op(1, ok(1, 10)), op(2, ok(2, 20)), op(3, ok(3, 30))];
        let events = vec![
            start(1, 11),
            done(1),
            start(2, 21),
            done(2),
            start(3, 31),
            done(3),
        ];
        let applied: BTreeMap<u64, Vec<String>> =
            (1..=3).map(|n| (n, vec![format!("{n}")])).collect();
        let states: FinalStates = (1..=3).map(|n| (id(n), TaskState::Completed)).collect();
        let clean = check(&ops, &events, &applied, &states, &[]);
        assert!(clean.safe(), "{clean:?}");
        assert_eq!((clean.acknowledged, clean.completed), (3, 3));

        // Task 2 still ready, task 3 unknown to the broker, task 1 ran twice with two effects.
        let mut states = states;
        states.insert(id(2), TaskState::Ready);
        states.remove(&id(3));
        let mut events = events;
        events.push(start(1, 40));
        let mut applied = applied;
        applied.get_mut(&1).unwrap().push("other".into());
        let bad = check(&ops, &events, &applied, &states, &[]);
        assert_eq!(bad.lost, 2);
        assert_eq!(bad.false_acks, 1);
        assert_eq!(bad.duplicated_deliveries, 1);
        assert_eq!(bad.duplicate_effects, 1);
        assert!(!bad.safe());
    }

    #[test]
    fn a_completion_no_worker_finished_is_a_false_ack() {
        let ops = vec![op(1, ok(1, 10))];
        let events = vec![start(1, 11)];
        let states: FinalStates = [(id(1), TaskState::Completed)].into();
        let verdict = check(&ops, &events, &BTreeMap::new(), &states, &[]);
        assert_eq!(verdict.false_acks, 1);
    }

    #[test]
    fn recovery_waits_for_both_an_ack_and_a_start_after_the_heal() {
        let mut late = op(2, ok(2, 250));
        late.invoked_ms = 240;
        let ops = vec![op(1, ok(1, 100)), late];
        let events = vec![start(1, 120), start(2, 300)];
        let faults = [
            Fault {
                what: "x".into(),
                start_ms: 150,
                healed_ms: 200,
                outage: true,
            },
            Fault {
                what: "after the producers".into(),
                start_ms: 260,
                healed_ms: 280,
                outage: true,
            },
            Fault {
                what: "nothing left".into(),
                start_ms: 400,
                healed_ms: 500,
                outage: true,
            },
            Fault {
                what: "a clock jump".into(),
                start_ms: 600,
                healed_ms: 700,
                outage: false,
            },
        ];
        let verdict = check(
            &ops,
            &events,
            &BTreeMap::new(),
            &FinalStates::new(),
            &faults,
        );
        // Healed at 200: the ack at 250 and the start at 300. Healed at 280, after the last
        // enqueue was sent (240): only the start at 300.
        assert_eq!(verdict.recovery_ms, vec![100, 20]);
        assert_eq!(verdict.unmeasured_recoveries, 1);
    }

    #[test]
    fn a_killed_workers_unfinished_task_is_timed_until_it_starts_elsewhere() {
        let on = |slot: &str, event: (String, Event)| (slot.to_owned(), event.1);
        let events = vec![
            on("worker-0", start(1, 100)), // finished before the kill
            on("worker-0", done(1)),
            on("worker-0", start(2, 150)), // running at the kill (200)
            on("worker-1", start(2, 1_250)),
            on("worker-0", start(3, 300)), // started by the new process
        ];
        let faults = [Fault {
            what: "kill-worker 0".into(),
            start_ms: 200,
            healed_ms: 210,
            outage: true,
        }];
        let verdict = check(&[], &events, &BTreeMap::new(), &FinalStates::new(), &faults);
        assert_eq!(verdict.redelivery_ms, vec![1_050]);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&values, 0.5), Some(50));
        assert_eq!(quantile(&values, 0.99), Some(99));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
