//! CPU-bound work split over a few threads: the first share on the calling
//! thread (a thread of the blocking pool), each other share on a scoped
//! thread of its own.

/// Runs `work` on each of `shares` at once and returns the results in the
/// order of `shares`. A panic on any thread is resumed on the caller, so a
/// share's results are never silently missing (inside `spawn_blocking` it
/// becomes the task's error).
pub fn on_threads<S: Send, R: Send>(shares: Vec<S>, work: impl Fn(S) -> R + Sync) -> Vec<R> {
    let mut shares = shares.into_iter();
    let Some(first) = shares.next() else {
        return Vec::new();
    };
    let work = &work;
    std::thread::scope(|scope| {
        let others: Vec<_> = shares
            .map(|share| scope.spawn(move || work(share)))
            .collect();
        let mut results = Vec::with_capacity(others.len() + 1);
        results.push(work(first));
        for other in others {
            results.push(
                other
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        results
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_the_order_of_the_shares() {
        let shares: Vec<Vec<u32>> = vec![vec![1, 2], vec![3], vec![], vec![4, 5, 6]];
        let sums = on_threads(shares, |share| share.iter().sum::<u32>());
        assert_eq!(sums, vec![3, 3, 0, 15]);
        assert!(on_threads(Vec::<u32>::new(), |n| n).is_empty());
    }

    #[test]
    fn a_panic_on_another_thread_reaches_the_caller() {
        let result = std::panic::catch_unwind(|| {
            on_threads(vec![1, 2], |n| {
                assert_ne!(n, 2, "second share fails");
                n
            })
        });
        assert!(result.is_err());
    }
}
