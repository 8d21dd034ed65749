//! Jobs the intake claims itself and hands to this replica's dispatcher (docs/architecture.md,
//! "Hand-off").
//!
//! Left to the queue, an admitted activation waits for the intake's `NOTIFY`, the dispatcher's
//! wake-up and a claim transaction with a durable commit of its own: about a third of the time
//! from receipt to AWS in a burst. Instead, while this replica's dispatcher runs and has a free
//! slot, the intake claims the job in its own transaction (lease and write-ahead record exactly as
//! a claim writes them, `admission::admit_and_commit`) and hands it over here right after the
//! commit, while the intake's flush is still under way. The job says so (`claim_on_disk` false),
//! and its reconciliation sends no membership change before a synchronous commit of its own puts
//! the intake's commit on disk too. A job claimed but never handed over (the replica died between
//! the two) is a claimed job like any other: taken over when its owner is seen dead or its lease
//! runs out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::store::jobs::ClaimedJob;

/// A claimed job with the dispatcher slot reserved for it.
#[derive(Debug)]
pub struct Handed {
    pub job: ClaimedJob,
    pub(crate) slot: OwnedSemaphorePermit,
}

/// Dispatcher slots the intake reserved for the jobs it is about to claim; released if the
/// intake's transaction does not commit.
#[derive(Debug, Default)]
pub struct Reserved(Vec<OwnedSemaphorePermit>);

impl Reserved {
    /// How many jobs may be claimed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Frees all but the first `n` slots (fewer jobs were claimed than reserved for).
    pub fn truncate(&mut self, n: usize) {
        self.0.truncate(n);
    }

    /// Adds the slots of `other`.
    pub fn append(&mut self, mut other: Reserved) {
        self.0.append(&mut other.0);
    }
}

/// The way from this replica's intake to its dispatcher.
#[derive(Debug)]
pub struct Handoff {
    owner: String,
    lease: Duration,
    /// The dispatcher's slots, shared with its own claims.
    slots: Arc<Semaphore>,
    /// True while the dispatcher runs (only then are leases taken: the replica is registered).
    open: AtomicBool,
    jobs: mpsc::UnboundedSender<Handed>,
}

impl Handoff {
    /// A hand-off for the dispatcher of replica `owner`, with its `concurrency` slots; closed until
    /// the dispatcher opens it.
    pub fn new(
        owner: &str,
        lease: Duration,
        concurrency: usize,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Handed>) {
        let (jobs, receiver) = mpsc::unbounded_channel();
        let handoff = Self {
            owner: owner.to_owned(),
            lease,
            slots: Arc::new(Semaphore::new(concurrency)),
            open: AtomicBool::new(false),
            jobs,
        };
        (Arc::new(handoff), receiver)
    }

    /// The replica whose leases the intake writes.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The lease the intake writes, in seconds.
    pub fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// Reserves up to `wanted` free dispatcher slots; none while the dispatcher is not running.
    pub fn reserve(&self, wanted: usize) -> Reserved {
        if !self.open.load(Ordering::Acquire) {
            return Reserved::default();
        }
        Reserved(
            (0..wanted)
                .map_while(|_| self.slots.clone().try_acquire_owned().ok())
                .collect(),
        )
    }

    /// Hands over `jobs`, claimed by the intake under the slots of `reserved` (one each, in
    /// order), once their transaction has committed. If the dispatcher has stopped meanwhile, the
    /// jobs wait for their lease to run out or their owner to be seen dead.
    pub fn hand(&self, reserved: Reserved, jobs: Vec<ClaimedJob>) {
        for (slot, job) in reserved.0.into_iter().zip(jobs) {
            if self.jobs.send(Handed { job, slot }).is_err() {
                tracing::warn!("dispatcher stopped; a claimed job waits for its lease to run out");
            }
        }
    }

    pub(crate) fn slots(&self) -> Arc<Semaphore> {
        self.slots.clone()
    }

    /// Lets the intake claim jobs: the dispatcher runs, on a replica known to be alive.
    pub fn open(&self) {
        self.open.store(true, Ordering::Release);
    }

    /// The dispatcher is stopping: the intake claims nothing more.
    pub fn close(&self) {
        self.open.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_reserved_until_the_dispatcher_opens_it_and_no_more_than_its_free_slots() {
        let (handoff, _jobs) = Handoff::new("r", Duration::from_secs(15), 2);
        assert!(handoff.reserve(1).is_empty());

        handoff.open();
        let first = handoff.reserve(5);
        assert_eq!(first.len(), 2);
        assert!(handoff.reserve(1).is_empty(), "every slot is taken");

        drop(first);
        assert_eq!(
            handoff.reserve(1).len(),
            1,
            "a dropped reservation frees its slots"
        );

        handoff.close();
        assert!(handoff.reserve(1).is_empty());
    }
}
