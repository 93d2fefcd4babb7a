//! The queue registry: every queue's number (which task ids carry) and shard count, kept in
//! Redis in a slot of its own and cached here. Queues are never deleted and their number and
//! shard count never change, so a cached entry stays true; only its `created` flag moves, from
//! false to true, once.

use std::collections::HashMap;
use std::sync::RwLock;

use floodway_core::QueueName;

/// A queue as the registry knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QueueEntry {
    /// The queue's number, 1 ..= 65535, carried in its task ids.
    pub number: u16,
    /// How many shards hold its tasks.
    pub shards: u16,
    /// True once every shard's metadata exists: before that the queue is being created (or
    /// its creator crashed) and counts as unknown.
    pub created: bool,
}

impl QueueEntry {
    /// Parses a registry value, `number|shards|created`.
    pub(crate) fn parse(text: &str) -> Option<QueueEntry> {
        let mut parts = text.split('|');
        let number = parts.next()?.parse().ok()?;
        let shards = parts.next()?.parse().ok()?;
        let created = parts.next()? == "1";
        (number > 0 && shards > 0).then_some(QueueEntry {
            number,
            shards,
            created,
        })
    }
}

/// The cache. Both maps hold at most [`crate::limits::QUEUES_MAX`] entries, the registry's own
/// bound.
#[derive(Default)]
pub(crate) struct Registry {
    by_name: RwLock<HashMap<QueueName, QueueEntry>>,
    by_number: RwLock<HashMap<u16, QueueName>>,
}

impl Registry {
    pub(crate) fn entry(&self, queue: &QueueName) -> Option<QueueEntry> {
        self.by_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .copied()
    }

    pub(crate) fn name(&self, number: u16) -> Option<QueueName> {
        self.by_number
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&number)
            .cloned()
    }

    /// Remembers an entry read from Redis.
    pub(crate) fn remember(&self, queue: &QueueName, entry: QueueEntry) {
        let mut by_name = self.by_name.write().unwrap_or_else(|p| p.into_inner());
        if by_name.len() >= crate::limits::QUEUES_MAX && !by_name.contains_key(queue) {
            return;
        }
        by_name.insert(queue.clone(), entry);
        self.by_number
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.number, queue.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        assert_eq!(
            QueueEntry::parse("7|4|1"),
            Some(QueueEntry {
                number: 7,
                shards: 4,
                created: true
            })
        );
        assert_eq!(QueueEntry::parse("0|1|1"), None);
        assert_eq!(QueueEntry::parse("x"), None);
    }
}
