//! The cheap heartbeat path's batcher: plain refreshes (`ZADD XX GT CH` of a new deadline) from
//! every concurrent request go to Redis as one pipeline per round trip. Each command alone costs
//! the store a read and a write system call; a pipeline of many costs one of each, so under load
//! the store spends about a microsecond per heartbeat instead of several. While one pipeline is
//! in flight the next one gathers, so a quiet node adds no wait and a busy one at most one round
//! trip.

use super::functions::DEADLINES;
use super::link::Link;
use crate::registry::store::{StoreError, StoreResult};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Most refreshes in one pipeline.
const MAX_BATCH: usize = 1024;
/// Refreshes waiting for the batcher before callers wait for room.
const QUEUE: usize = 8192;

struct Pending {
    id: String,
    deadline: u64,
    /// Whether the registration existed (and so was refreshed).
    done: oneshot::Sender<StoreResult<bool>>,
}

/// Sends refreshes to the batcher.
#[derive(Clone)]
pub struct Heartbeats {
    queue: mpsc::Sender<Pending>,
}

impl Heartbeats {
    /// Starts the batcher on `link` until `closing`.
    pub fn start(link: Arc<Link>, closing: CancellationToken) -> Heartbeats {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            tokio::select! {
                _ = closing.cancelled() => {}
                _ = run(link, pending) => {}
            }
        });
        Heartbeats { queue }
    }

    /// Moves `id`'s deadline to `deadline` if it exists and the deadline is later; returns
    /// whether it existed.
    pub async fn refresh(&self, id: &str, deadline: u64) -> StoreResult<bool> {
        let (done, answer) = oneshot::channel();
        let pending = Pending {
            id: id.to_owned(),
            deadline,
            done,
        };
        let stopped = || StoreError::Unreachable("the registry is closing".into());
        self.queue.send(pending).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(link: Arc<Link>, mut pending: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if pending.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let results = send(&link, &batch).await;
        for (item, result) in batch.drain(..).zip(results) {
            let _ = item.done.send(result);
        }
    }
}

/// One pipeline for `batch`; one result per item.
async fn send(link: &Link, batch: &[Pending]) -> Vec<StoreResult<bool>> {
    let all = |err: StoreError| batch.iter().map(|_| Err(err.clone())).collect();
    let (mut connection, generation) = match link.connection() {
        Ok(connection) => connection,
        Err(err) => return all(err),
    };
    let mut pipe = redis::pipe();
    for item in batch {
        pipe.cmd("ZADD")
            .arg(DEADLINES)
            .arg("XX")
            .arg("GT")
            .arg("CH")
            .arg(item.deadline)
            .arg(&item.id);
    }
    let started = Instant::now();
    let reply: redis::RedisResult<Vec<u64>> = pipe.query_async(&mut connection).await;
    link.metrics.ops.add(&["heartbeat"], batch.len() as u64);
    match reply {
        Ok(changed) if changed.len() == batch.len() => {
            link.replied();
            link.metrics
                .round_trip
                .observe(started.elapsed().as_secs_f64());
            changed.into_iter().map(|n| Ok(n == 1)).collect()
        }
        Ok(_) => all(StoreError::Unreachable(
            "a short reply to a pipeline".into(),
        )),
        Err(err) => all(link.failed(generation, err)),
    }
}
