//! Fault isolation: a plugin call that fails (trap, time or memory limit, malformed answer)
//! is retried on each half of its batch until the failing items are found. `k` bad items
//! among `n` cost O(k log n) calls; the others get their results as if nothing happened.
//! An item whose own result broke the output rules fails alone, without another call.
//!
//! Isolation has a time budget per batch: a batch whose records all time out would
//! otherwise cost 2n−1 time limits. Items are handled in order, so when the budget runs
//! out the items left form a suffix of the batch: they **wait** (stay in the queue, in
//! order), and the length of the first span left undecided is reported, so that the next
//! batch starts there with that size and goes on narrowing: each batch at least halves the
//! span, so a poison record is found after at most log2(n) budgets.

use flowhost_runtime::CallError;
use std::time::Instant;

/// One item's outcome.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Slot<R> {
    Done(R),
    /// The call failed on this item: a fault of the plugin, or a result the store cannot
    /// take ([`CallError::is_plugin_fault`] tells which).
    Failed(CallError),
    /// The isolation budget ran out before this item was decided.
    Wait,
}

/// What isolating a batch came to.
pub(crate) struct Isolated<R> {
    pub slots: Vec<Slot<R>>,
    /// Plugin calls made.
    pub calls: usize,
    /// When the budget ran out: the length of the first span left undecided (the size for
    /// the next batch, which starts there).
    pub narrow_to: Option<usize>,
}

impl<R> Isolated<R> {
    /// Items the plugin failed on by its own fault, and the first such error (what its
    /// breaker counts; a result the store cannot take is the data's fault, not the plugin's).
    pub fn failures(&self) -> (usize, Option<String>) {
        let mut errors = self.slots.iter().filter_map(|s| match s {
            Slot::Failed(e) if e.is_plugin_fault() => Some(e),
            _ => None,
        });
        let first = errors.next().map(|e| e.to_string());
        (first.as_ref().map_or(0, |_| 1 + errors.count()), first)
    }

    /// Items left waiting (a suffix of the batch).
    pub fn waiting(&self) -> usize {
        self.slots
            .iter()
            .rev()
            .take_while(|s| matches!(s, Slot::Wait))
            .count()
    }
}

/// The per-item result of one call: the call fails as a whole, or gives each item a value
/// or its own error.
pub(crate) type CallResult<R> = Result<Vec<Result<R, CallError>>, CallError>;

/// Calls `call` on `items`, splitting on failure, until `deadline` (the isolation budget;
/// the first call is always made). One slot per item, same order.
pub(crate) fn isolate<T, R>(
    items: &[T],
    call: &impl Fn(&[T]) -> CallResult<R>,
    deadline: Instant,
) -> Isolated<R> {
    let mut run = Run {
        call,
        deadline,
        calls: 0,
        first_waiting: None,
    };
    let mut slots = Vec::with_capacity(items.len());
    run.split(items, &mut slots, true);
    Isolated {
        slots,
        calls: run.calls,
        narrow_to: run.first_waiting,
    }
}

struct Run<'a, C> {
    call: &'a C,
    deadline: Instant,
    calls: usize,
    /// The length of the first span left waiting, once the budget is spent.
    first_waiting: Option<usize>,
}

impl<C> Run<'_, C> {
    fn split<T, R>(&mut self, items: &[T], out: &mut Vec<Slot<R>>, first: bool)
    where
        C: Fn(&[T]) -> CallResult<R>,
    {
        if items.is_empty() {
            return;
        }
        if !first && (self.first_waiting.is_some() || Instant::now() >= self.deadline) {
            self.first_waiting.get_or_insert(items.len());
            out.extend(items.iter().map(|_| Slot::Wait));
            return;
        }
        self.calls += 1;
        match (self.call)(items) {
            Ok(results) => out.extend(results.into_iter().map(|r| match r {
                Ok(value) => Slot::Done(value),
                Err(e) => Slot::Failed(e),
            })),
            Err(e) if items.len() == 1 => out.push(Slot::Failed(e)),
            Err(_) => {
                let (left, right) = items.split_at(items.len() / 2);
                self.split(left, out, false);
                self.split(right, out, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Fails any batch holding a negative number; doubles the others; 0 is an item whose own
    /// result is invalid.
    fn call(items: &[i64]) -> CallResult<i64> {
        if items.iter().any(|&i| i < 0) {
            Err(CallError::Invalid(format!("bad item in {items:?}")))
        } else {
            Ok(items
                .iter()
                .map(|&i| {
                    if i == 0 {
                        Err(CallError::Invalid("zero".into()))
                    } else {
                        Ok(i * 2)
                    }
                })
                .collect())
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn finds_the_bad_items_in_few_calls() {
        let mut items: Vec<i64> = (1..=1024).collect();
        items[100] = -1;
        items[900] = -2;
        let out = isolate(&items, &call, far());
        assert_eq!(out.slots.len(), 1024);
        for (i, r) in out.slots.iter().enumerate() {
            match i {
                100 | 900 => assert!(
                    matches!(r, Slot::Failed(e) if e.to_string().contains("bad item in [-")),
                    "{r:?}"
                ),
                _ => assert_eq!(r, &Slot::Done((i as i64 + 1) * 2)),
            }
        }
        // 2 bad in 1024: at most 1 + 2 * 2 * log2(1024) calls.
        assert!(out.calls <= 41, "{} calls", out.calls);
        assert_eq!(out.narrow_to, None);
    }

    #[test]
    fn an_invalid_item_fails_alone_without_another_call() {
        let out = isolate(&[1, 0, 3], &call, far());
        assert_eq!(out.calls, 1);
        assert_eq!(
            out.slots,
            [
                Slot::Done(2),
                Slot::Failed(CallError::Invalid("zero".into())),
                Slot::Done(6)
            ]
        );
    }

    #[test]
    fn everything_failing_costs_at_most_2n_minus_1() {
        let items = vec![-1i64; 64];
        let out = isolate(&items, &call, far());
        assert!(out.slots.iter().all(|r| matches!(r, Slot::Failed(_))));
        assert_eq!(out.calls, 127);
    }

    #[test]
    fn a_spent_budget_leaves_an_ordered_suffix_waiting_and_says_where_to_narrow() {
        let items = vec![-1i64; 64];
        // Already past the deadline: only the first call is made.
        let out = isolate(&items, &call, Instant::now());
        assert_eq!(out.calls, 1);
        assert_eq!(out.waiting(), 64);
        assert_eq!(out.narrow_to, Some(32), "the next batch is the first half");

        // A budget that runs out during the third call: what was decided is a prefix.
        let calls = std::cell::Cell::new(0);
        let budget = Duration::from_millis(200);
        let counted = |items: &[i64]| {
            calls.set(calls.get() + 1);
            if calls.get() == 3 {
                std::thread::sleep(budget + Duration::from_millis(50));
            }
            call(items)
        };
        let mut items: Vec<i64> = (1..=64).collect();
        items[40] = -1;
        let out = isolate(&items, &counted, Instant::now() + budget);
        // Calls: all 64 (fails), 1..32 (fine), 33..64 (fails, budget spent).
        assert_eq!(out.calls, 3);
        assert!(out.slots[..32].iter().all(|s| matches!(s, Slot::Done(_))));
        assert_eq!(out.waiting(), 32);
        assert_eq!(out.narrow_to, Some(16), "33..48 is the first span left");
    }
}
