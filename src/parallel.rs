//! A batch's per-frame work spread over the cores, the results kept in the frames' order.
//! Plain threads scoped to the call: nothing outlives it, and nothing here knows what a frame is.

/// `f` of each item, on up to `threads` threads (each a run of consecutive items), in order.
pub fn map_in_order<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.min(items.len()).max(1);
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut rest = items;
    let mut runs = Vec::with_capacity(threads);
    while !rest.is_empty() {
        let tail = rest.split_off(per.min(rest.len()));
        runs.push(std::mem::replace(&mut rest, tail));
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| s.spawn(move || run.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
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
