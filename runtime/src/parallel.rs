//! Loading a package on every core. Cold start is a dozen independent jobs (a sha256 per file, a tract plan per
//! stage), each of one thread; done one after the other they left all cores but one idle while a user waited
//! (issue 13: cold start 220–380 ms on 2 cores). [`map_in_order`] runs them on scoped threads and gives the results
//! back in the jobs' order, so that errors are reported as a sequential load would report them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// `f` over `items` on up to `threads` threads (the machine's cores when `None`), results in `items`' order.
///
/// Threads take the next item as they finish one, so a long job (the embeddings' 24 MB table) does not hold back
/// the short ones behind it. With one item or one thread it runs on the caller's thread. A panic in `f`
/// propagates to the caller, as it would sequentially.
pub fn map_in_order<T: Sync, R: Send>(items: &[T], threads: Option<usize>, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = || std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = threads.unwrap_or_else(cores).clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let at = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(at) else { break };
                let result = f(item);
                // A poisoned lock means another job panicked; the scope re-raises that panic.
                if let Ok(mut results) = results.lock() {
                    results[at] = Some(result);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    results.into_iter().map(|r| r.expect("every item was taken by a thread that finished")).collect()
}

/// Hands the memory freed after a parallel load back to the system. glibc gives each thread that allocates its own
/// arena, and keeps what is freed there for later: after loading the shipped package on two threads the resident
/// set stayed about 9 MB higher than after a sequential load, for as long as the process ran. A no-op where the C
/// library is not glibc.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own allocator state, under its locks; it takes no pointers of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes every thread allocate from glibc's main arena. By default a thread that allocates gets an arena of its
/// own, and what it frees stays there: the background planner's transient buffers (decoded protobufs, weights
/// before packing) then sat beside the main thread's, and `cosee-edge bench` peaked at 85-86 MB resident against
/// 76-78 MB with one arena (the shipped package, 20 inputs). The engine runs one input at a time, so the shared
/// arena's lock is not contended. For the binary's `main`; a library leaves the embedder's allocator alone. A
/// no-op where the C library is not glibc.
pub fn share_one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc allocator parameter, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order_whatever_the_thread_count() {
        let items: Vec<u64> = (0..50).collect();
        // Uneven work, so threads finish out of order.
        let work = |&n: &u64| {
            std::thread::sleep(std::time::Duration::from_micros((50 - n) * 20));
            n * n
        };
        let expected: Vec<u64> = items.iter().map(|n| n * n).collect();
        for threads in [None, Some(1), Some(2), Some(7), Some(100)] {
            assert_eq!(map_in_order(&items, threads, work), expected, "{threads:?}");
        }
        assert!(map_in_order(&[] as &[u64], None, work).is_empty());
    }

    #[test]
    fn every_item_runs_once_on_several_threads() {
        let items: Vec<usize> = (0..64).collect();
        let seen = Mutex::new(std::collections::HashSet::new());
        let threads = Mutex::new(std::collections::HashSet::new());
        map_in_order(&items, Some(4), |&i| {
            assert!(seen.lock().unwrap().insert(i), "item {i} ran twice");
            threads.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(std::time::Duration::from_millis(1));
        });
        assert_eq!(seen.lock().unwrap().len(), 64);
        assert!(threads.lock().unwrap().len() > 1, "the work was not spread over threads");
    }
}
