//! Fault isolation: a plugin call that fails (trap, time or memory limit, malformed answer)
//! is retried on each half of its batch until the failing items are found. `k` bad items
//! among `n` cost O(k log n) calls; the others get their results as if nothing happened.

use flowhost_runtime::CallError;

/// Calls `call` on `items`, splitting on failure; one result per item, same order. `calls`
/// counts the calls made.
pub(crate) fn isolate<T, R>(
    items: &[T],
    call: &impl Fn(&[T]) -> Result<Vec<R>, CallError>,
    calls: &mut usize,
) -> Vec<Result<R, String>> {
    *calls += 1;
    match call(items) {
        Ok(out) => out.into_iter().map(Ok).collect(),
        Err(e) if items.len() <= 1 => items.iter().map(|_| Err(e.to_string())).collect(),
        Err(_) => {
            let (left, right) = items.split_at(items.len() / 2);
            let mut out = isolate(left, call, calls);
            out.extend(isolate(right, call, calls));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails any batch holding a negative number; doubles the others.
    fn call(items: &[i64]) -> Result<Vec<i64>, CallError> {
        if items.iter().any(|&i| i < 0) {
            Err(CallError::Invalid(format!("bad item in {items:?}")))
        } else {
            Ok(items.iter().map(|i| i * 2).collect())
        }
    }

    #[test]
    fn finds_the_bad_items_in_few_calls() {
        let mut items: Vec<i64> = (0..1024).collect();
        items[100] = -1;
        items[900] = -2;
        let mut calls = 0;
        let out = isolate(&items, &call, &mut calls);
        assert_eq!(out.len(), 1024);
        for (i, r) in out.iter().enumerate() {
            match i {
                100 | 900 => assert!(r.as_ref().unwrap_err().contains("bad item in [-")),
                _ => assert_eq!(r.as_ref().unwrap(), &(i as i64 * 2)),
            }
        }
        // 2 bad in 1024: at most 1 + 2 * 2 * log2(1024) calls.
        assert!(calls <= 41, "{calls} calls");
    }

    #[test]
    fn everything_failing_costs_at_most_2n_minus_1() {
        let items = vec![-1i64; 64];
        let mut calls = 0;
        let out = isolate(&items, &call, &mut calls);
        assert!(out.iter().all(|r| r.is_err()));
        assert_eq!(calls, 127);
    }
}
