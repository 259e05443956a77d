//! A batch's per-frame work spread over the cores, the results kept in the frames' order.
//! Nothing here knows what a frame is.
//!
//! The threads are rayon's, started once and kept: a thread spawned per batch cost tcmalloc a
//! thread cache each that it never took back (measured: the caches grew by 10 MB a second, and
//! the resident size with them, on a run of a few minutes).

use rayon::prelude::*;

/// `f` of each item, on up to `threads` threads (each a run of consecutive items), in order.
pub fn map_in_order<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> R + Sync + Send,
) -> Vec<R> {
    let threads = threads.min(items.len()).max(1);
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    items.into_par_iter().with_min_len(per).map(f).collect()
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_whatever_the_threads() {
        let items: Vec<u32> = (0..11).collect();
        for threads in [1, 2, 3, 4, 16] {
            let got = map_in_order(items.clone(), threads, |x| x * 10);
            assert_eq!(
                got,
                (0..11).map(|x| x * 10).collect::<Vec<_>>(),
                "{threads}"
            );
        }
        assert!(map_in_order(Vec::<u32>::new(), 4, |x| x).is_empty());
    }
}
