//! Waking reserves that wait (long poll) when tasks may have become ready.
//!
//! Within a process, every call that can make tasks of a queue ready notifies that queue's
//! [`QueueWaker`] directly. Across processes, the scripts append a small event to the shard's
//! event stream whenever they make a task reservable, and a watcher task per shard waits on it
//! with `XREAD BLOCK` on a connection of its own, from the id it last saw, so no event between
//! two reads is missed. Watchers run only while some reserve waits on their queue, and at most
//! [`crate::limits::WATCHERS_MAX`] at once; a waiting reserve also looks again after at most
//! [`crate::limits::REPOLL_MAX`], which covers events lost while a watcher reconnected.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use floodway_core::QueueName;
use redis::Value;
use tokio::sync::Notify;

use crate::limits;

/// The waiting reserves of one queue.
#[derive(Default)]
pub(crate) struct QueueWaker {
    /// Notified (all waiters) when tasks of the queue may have become ready.
    pub notify: Notify,
    /// Reserves waiting now; watchers stop when it drops to zero.
    waiting: AtomicUsize,
    /// Event streams with a running watcher; guarded so that a watcher stopping and a reserve
    /// starting to wait never both think the other will watch.
    watched: Mutex<HashSet<String>>,
}

/// Counts a waiting reserve while it lives.
pub(crate) struct Waiting(Arc<QueueWaker>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every queue's waker.
#[derive(Default)]
pub(crate) struct Wakers {
    /// Bounded by [`limits::QUEUES_MAX`]; reserves on further (invented) queue names get a
    /// waker of their own that only re-polling wakes.
    queues: Mutex<HashMap<QueueName, Arc<QueueWaker>>>,
    /// Watchers running, bounded by [`limits::WATCHERS_MAX`].
    watchers: Arc<AtomicUsize>,
}

impl Wakers {
    pub(crate) fn get(&self, queue: &QueueName) -> Arc<QueueWaker> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(waker) = queues.get(queue) {
            return waker.clone();
        }
        let waker = Arc::new(QueueWaker::default());
        if queues.len() < limits::QUEUES_MAX {
            queues.insert(queue.clone(), waker.clone());
        }
        waker
    }

    /// Wakes the reserves waiting on `queue` in this process.
    pub(crate) fn notify(&self, queue: &QueueName) {
        let waker = self
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .cloned();
        if let Some(waker) = waker {
            waker.notify.notify_waiters();
        }
    }

    /// Counts a waiting reserve on `waker` and makes sure each of `streams` has a watcher,
    /// started with `spawn` (which gets the stream and must run [`watch`]).
    pub(crate) fn wait(
        &self,
        waker: &Arc<QueueWaker>,
        streams: &[String],
        spawn: impl Fn(String, Arc<QueueWaker>, WatcherSlot),
    ) -> Waiting {
        waker.waiting.fetch_add(1, Ordering::SeqCst);
        let mut watched = waker.watched.lock().unwrap_or_else(|p| p.into_inner());
        for stream in streams {
            if watched.contains(stream) {
                continue;
            }
            let running = self.watchers.fetch_add(1, Ordering::SeqCst);
            if running >= limits::WATCHERS_MAX {
                self.watchers.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            watched.insert(stream.clone());
            spawn(
                stream.clone(),
                waker.clone(),
                WatcherSlot(self.watchers.clone()),
            );
        }
        Waiting(waker.clone())
    }
}

/// One of the [`limits::WATCHERS_MAX`] watcher places, given back when dropped.
pub(crate) struct WatcherSlot(Arc<AtomicUsize>);

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a watcher needs from the broker: a blocking connection, made anew after an error.
pub(crate) trait Blocking: Send + Sync + 'static {
    /// A connection for blocking reads.
    fn connect(
        &self,
    ) -> impl std::future::Future<Output = redis::RedisResult<crate::connection::Connection>> + Send;
}

/// Watches `stream` for wake-up events and notifies `waker` on each, until no reserve waits
/// on the queue or the broker is gone.
pub(crate) async fn watch<B: Blocking>(
    broker: Weak<B>,
    stream: String,
    waker: Arc<QueueWaker>,
    _slot: WatcherSlot,
) {
    // From the start of the (short, trimmed) stream: an event appended between the waiting
    // reserve's look and this watcher's first read wakes it (once, perhaps needlessly).
    let mut last = "0-0".to_owned();
    let mut connection = None;
    loop {
        {
            let mut watched = waker.watched.lock().unwrap_or_else(|p| p.into_inner());
            if waker.waiting.load(Ordering::SeqCst) == 0 {
                watched.remove(&stream);
                return;
            }
        }
        let Some(owner) = broker.upgrade() else {
            return;
        };
        if connection.is_none() {
            match owner.connect().await {
                Ok(conn) => connection = Some(conn),
                Err(err) => {
                    tracing::debug!(%err, %stream, "wake-up watcher cannot connect; retrying");
                    drop(owner);
                    tokio::time::sleep(limits::WATCH_BLOCK / 10).await;
                    continue;
                }
            }
        }
        drop(owner);
        let conn = connection.as_ref().expect("connected above");
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(64)
            .arg("BLOCK")
            .arg(limits::WATCH_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last);
        match conn.cmd(&cmd).await {
            Ok(Value::Nil) => {}
            Ok(reply) => {
                if let Some(id) = newest_id(&reply) {
                    last = id;
                }
                waker.notify.notify_waiters();
            }
            Err(err) => {
                tracing::debug!(%err, %stream, "wake-up watcher lost its connection");
                connection = None;
                tokio::time::sleep(limits::WATCH_BLOCK / 10).await;
            }
        }
    }
}

/// The id of the last entry in an `XREAD` reply (one stream; RESP2 array or RESP3 map).
fn newest_id(reply: &Value) -> Option<String> {
    let entries = match reply {
        Value::Array(streams) => match streams.first()? {
            Value::Array(pair) => pair.get(1)?,
            _ => return None,
        },
        Value::Map(streams) => &streams.first()?.1,
        _ => return None,
    };
    let Value::Array(entries) = entries else {
        return None;
    };
    match entries.last()? {
        Value::Array(entry) => crate::connection::text(entry.first()?),
        _ => None,
    }
}
