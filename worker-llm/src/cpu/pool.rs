//! The thread pool of the CPU blocks, made for a machine shared with other work.
//!
//! A barrier pool (Candle's) hands each thread its share and waits for every thread to report: when the
//! kernel gives a thread's core to another process, everyone spins at the barrier until it comes back,
//! and decode speed collapses (7-26 tokens/s instead of 120 with one busy process on 2 cores). Here the
//! caller works through the items itself from a shared cursor, helpers join while the job is open, and
//! the caller waits only for helpers that actually took a chunk: a helper that was not scheduled costs
//! nothing, and the job finishes at the speed of the cores the process gets. Helpers spin briefly
//! between jobs (consecutive matrix products follow each other within microseconds), then sleep; the
//! caller yields its core while it waits.

use std::cell::UnsafeCell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

/// `state`'s bit saying the job takes no more helpers; the bits below count helpers inside it.
const CLOSED: usize = 1 << (usize::BITS - 1);
/// Spins of a helper waiting for the next job before it sleeps (tens of microseconds).
const HELPER_SPINS: u32 = 4_000;
/// Spins of the caller waiting for helpers before it yields its core.
const CALLER_SPINS: u32 = 200;

type Job<'a> = &'a (dyn Fn(Range<usize>) + Sync);

struct Shared {
    /// Bumped for every job: what sleeping helpers wait on.
    epoch: AtomicUsize,
    /// `CLOSED` plus the number of helpers inside the current job.
    state: AtomicUsize,
    cursor: AtomicUsize,
    items: AtomicUsize,
    chunk: AtomicUsize,
    /// The current job's closure, valid while `state` is open or counts helpers.
    job: UnsafeCell<Option<Job<'static>>>,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the caller while the job is closed and no helper is inside it, and
// read only by helpers that entered the open job (see `Pool::execute_chunked`).
unsafe impl Sync for Shared {}

/// A pool of `threads - 1` helpers plus the calling thread.
pub struct Pool {
    shared: &'static Shared,
    helpers: usize,
    /// One job at a time.
    calls: Mutex<()>,
}

impl Pool {
    fn new(threads: usize) -> Pool {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            epoch: AtomicUsize::new(0),
            state: AtomicUsize::new(CLOSED),
            cursor: AtomicUsize::new(0),
            items: AtomicUsize::new(0),
            chunk: AtomicUsize::new(1),
            job: UnsafeCell::new(None),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }));
        let helpers = threads.saturating_sub(1);
        for i in 0..helpers {
            std::thread::Builder::new()
                .name(format!("llm-cpu-{i}"))
                .spawn(move || helper(shared))
                .expect("spawning a CPU helper thread");
        }
        Pool {
            shared,
            helpers,
            calls: Mutex::new(()),
        }
    }

    /// Threads that work on a job, the caller included.
    pub fn threads(&self) -> usize {
        self.helpers + 1
    }

    /// Calls `f` on disjoint ranges covering `0..items`, on the calling thread and whichever helpers
    /// join; returns when every range is done.
    pub fn execute_chunked(&self, items: usize, f: impl Fn(Range<usize>) + Sync) {
        if items == 0 {
            return;
        }
        if self.helpers == 0 || items == 1 {
            f(0..items);
            return;
        }
        let _one_job = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let s = self.shared;
        let job: Job<'_> = &f;
        // SAFETY: the job is closed and empty (the previous call waited for its helpers), so no helper
        // reads `job`; the lifetime is erased for the time of this call only: helpers stop reading it
        // before the caller leaves (it waits for the count to drop to zero below).
        unsafe {
            *s.job.get() = Some(std::mem::transmute::<Job<'_>, Job<'static>>(job));
        }
        s.cursor.store(0, Ordering::Relaxed);
        s.items.store(items, Ordering::Relaxed);
        s.chunk
            .store(items.div_ceil(self.threads() * 4).max(1), Ordering::Relaxed);
        s.state.store(0, Ordering::Release);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        run_chunks(s, job);
        // No helper enters from now on; wait for those inside (they hold a chunk each at most).
        let mut spins = 0;
        while s.state.fetch_or(CLOSED, Ordering::AcqRel) & !CLOSED != 0 {
            spins += 1;
            if spins < CALLER_SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: closed and empty: nobody reads `job` until the next call sets it.
        unsafe { *s.job.get() = None };
    }
}

fn run_chunks(s: &Shared, job: Job<'_>) {
    let (items, chunk) = (s.items.load(Ordering::Relaxed), s.chunk.load(Ordering::Relaxed));
    loop {
        let start = s.cursor.fetch_add(chunk, Ordering::Relaxed);
        if start >= items {
            break;
        }
        job(start..items.min(start + chunk));
    }
}

fn helper(s: &'static Shared) {
    let mut seen = 0;
    loop {
        seen = wait_for_job(s, seen);
        // Enter the job if it is still open.
        let mut state = s.state.load(Ordering::Acquire);
        let entered = loop {
            if state & CLOSED != 0 {
                break false;
            }
            match s
                .state
                .compare_exchange_weak(state, state + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break true,
                Err(now) => state = now,
            }
        };
        if entered {
            // SAFETY: inside an open job, `job` is set and stays valid until this helper leaves.
            if let Some(job) = unsafe { *s.job.get() } {
                run_chunks(s, job);
            }
            s.state.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Waits until the epoch moves past `seen`: spinning a little, then asleep.
fn wait_for_job(s: &Shared, seen: usize) -> usize {
    for _ in 0..HELPER_SPINS {
        let epoch = s.epoch.load(Ordering::Acquire);
        if epoch != seen {
            return epoch;
        }
        std::hint::spin_loop();
    }
    let mut guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
    s.sleepers.fetch_add(1, Ordering::SeqCst);
    loop {
        let epoch = s.epoch.load(Ordering::SeqCst);
        if epoch != seen {
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            return epoch;
        }
        guard = s.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
    }
}

/// The process's pool: `RAYON_NUM_THREADS` threads, else one per physical core (as Candle counts).
pub fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(candle_core::utils::get_num_threads().max(1)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn every_item_runs_exactly_once_whatever_the_helpers_do() {
        let pool = Pool::new(3);
        for items in [1usize, 2, 7, 64, 1000] {
            let hits: Vec<AtomicU64> = (0..items).map(|_| AtomicU64::new(0)).collect();
            for _ in 0..50 {
                pool.execute_chunked(items, |range| {
                    for i in range {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 50));
        }
    }

    #[test]
    fn the_caller_finishes_alone_when_no_helper_runs() {
        // Helpers asleep on a long wait still never block the caller: a job right after creation, and
        // one after the helpers have gone to sleep, both complete.
        let pool = Pool::new(2);
        let total = AtomicU64::new(0);
        pool.execute_chunked(100, |r| {
            total.fetch_add(r.len() as u64, Ordering::Relaxed);
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        pool.execute_chunked(100, |r| {
            total.fetch_add(r.len() as u64, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), 200);
    }
}
