//! The guest's allocator: talc, with a cache of freed small blocks in front of it.
//!
//! A plugin's batch allocates and frees a great many small blocks (strings of a payload,
//! map entries, labels), and talc's bookkeeping for each (finding a bin, splitting, merging
//! neighbours on free) was about a third of a guest's time. Freed blocks of up to 256 bytes
//! are kept on one list per 8-byte size class and handed out again first: an allocation or
//! a free of a small block is a few instructions. The cache holds at most
//! [`MAX_CACHED`] bytes; beyond that blocks go back to talc, so a burst of one size never
//! pins more than that much of the guest's memory. BENCHMARKS.md has the measured
//! difference.
//!
//! Only for wasm without threads: the lists are plain memory, with no locking.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

/// Size classes are 8 bytes apart: a block of a class is `(class + 1) * STEP` bytes.
const STEP: usize = 8;
/// Blocks up to `CLASSES * STEP` bytes (256) are cached.
const CLASSES: usize = 32;
/// The most bytes the lists hold together.
const MAX_CACHED: usize = 1 << 20;

/// `inner` with a small-block cache in front of it.
pub struct SmallBlocks<A: GlobalAlloc> {
    inner: A,
    lists: UnsafeCell<Lists>,
}

struct Lists {
    /// The first free block of each class; each free block holds the address of the next.
    heads: [*mut u8; CLASSES],
    /// Bytes held on all lists.
    cached: usize,
}

// SAFETY: only for wasm targets without the atomics feature, where there is one thread and
// the lists can never be reached concurrently. Elsewhere (the tests) it is never shared.
#[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
unsafe impl<A: GlobalAlloc + Sync> Sync for SmallBlocks<A> {}

impl<A: GlobalAlloc> SmallBlocks<A> {
    /// Wraps an allocator.
    pub const fn new(inner: A) -> Self {
        Self {
            inner,
            lists: UnsafeCell::new(Lists {
                heads: [ptr::null_mut(); CLASSES],
                cached: 0,
            }),
        }
    }
}

/// The class of a layout, if its blocks are cached.
fn class(size: usize, align: usize) -> Option<usize> {
    (align <= STEP && size <= CLASSES * STEP).then(|| size.saturating_sub(1) / STEP)
}

/// The layout a block of a class is taken from the inner allocator with.
fn block(class: usize) -> Layout {
    // SAFETY: a multiple of 8 of at most 256 bytes with an alignment of 8 is a valid layout.
    unsafe { Layout::from_size_align_unchecked((class + 1) * STEP, STEP) }
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for SmallBlocks<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout.size(), layout.align()) else {
            // SAFETY: the caller's layout is passed on unchanged.
            return unsafe { self.inner.alloc(layout) };
        };
        // SAFETY: one thread (see `Sync`), and no reference to the lists outlives this call.
        let lists = unsafe { &mut *self.lists.get() };
        let head = lists.heads[c];
        if head.is_null() {
            // SAFETY: `block` is a valid, non-zero layout.
            return unsafe { self.inner.alloc(block(c)) };
        }
        // SAFETY: a listed block is a free block of this class that holds the next address.
        lists.heads[c] = unsafe { head.cast::<*mut u8>().read() };
        lists.cached -= block(c).size();
        head
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(c) = class(layout.size(), layout.align()) else {
            // SAFETY: allocated by `inner` with this layout (see `alloc`).
            return unsafe { self.inner.dealloc(ptr, layout) };
        };
        // SAFETY: as in `alloc`.
        let lists = unsafe { &mut *self.lists.get() };
        let size = block(c).size();
        if lists.cached + size > MAX_CACHED {
            // SAFETY: every block of a class comes from `inner` with the class's layout.
            return unsafe { self.inner.dealloc(ptr, block(c)) };
        }
        // SAFETY: the block is at least 8 bytes and 8-aligned, room for one address.
        unsafe { ptr.cast::<*mut u8>().write(lists.heads[c]) };
        lists.heads[c] = ptr;
        lists.cached += size;
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = class(layout.size(), layout.align());
        let new = class(new_size, layout.align());
        match (old, new) {
            // The block already has room: its class is the same.
            (Some(a), Some(b)) if a == b => ptr,
            // SAFETY: a large block stays with `inner`, which may grow it in place.
            (None, None) => unsafe { self.inner.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: the caller guarantees `new_size` with the old alignment is valid.
                let new_layout =
                    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                // SAFETY: through this allocator's own `alloc` and `dealloc`, which pick
                // the class (or `inner`) for each layout.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    moved
                }
            }
        }
    }
}

impl<A: GlobalAlloc> Drop for SmallBlocks<A> {
    fn drop(&mut self) {
        // Only a cache that is not the global allocator is ever dropped (the tests'); its
        // listed blocks go back to the allocator they came from.
        let lists = self.lists.get_mut();
        for (c, head) in lists.heads.iter_mut().enumerate() {
            while !head.is_null() {
                let listed = *head;
                // SAFETY: a listed block holds the next address and came from `inner` with
                // its class's layout.
                unsafe {
                    *head = listed.cast::<*mut u8>().read();
                    self.inner.dealloc(listed, block(c));
                }
            }
        }
        lists.cached = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::alloc::System;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn a_freed_small_block_is_handed_out_again_and_large_ones_pass_through() {
        let a = SmallBlocks::new(System);
        unsafe {
            let small = a.alloc(layout(20, 4));
            a.dealloc(small, layout(20, 4));
            // 17..=24 bytes share a class: the same block comes back.
            assert_eq!(a.alloc(layout(24, 8)), small);
            assert_eq!((*a.lists.get()).cached, 0);
            a.dealloc(small, layout(24, 8));
            assert_eq!((*a.lists.get()).cached, 24);

            // Over 256 bytes, or aligned beyond 8: never listed.
            let large = a.alloc(layout(257, 8));
            a.dealloc(large, layout(257, 8));
            let aligned = a.alloc(layout(16, 16));
            assert_eq!(aligned as usize % 16, 0);
            a.dealloc(aligned, layout(16, 16));
            assert_eq!((*a.lists.get()).cached, 24);
        }
    }

    #[test]
    fn realloc_keeps_the_block_within_its_class_and_the_bytes_across_classes() {
        let a = SmallBlocks::new(System);
        unsafe {
            let p = a.alloc(layout(9, 1));
            p.copy_from_nonoverlapping(b"abcdefghi".as_ptr(), 9);
            assert_eq!(
                a.realloc(p, layout(9, 1), 16),
                p,
                "9 and 16 bytes share a class"
            );
            let q = a.realloc(p, layout(16, 1), 300);
            assert_ne!(q, p);
            assert_eq!(std::slice::from_raw_parts(q, 9), b"abcdefghi");
            let r = a.realloc(q, layout(300, 1), 5);
            assert_eq!(std::slice::from_raw_parts(r, 5), b"abcde");
            a.dealloc(r, layout(5, 1));
        }
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let a = SmallBlocks::new(System);
        let l = layout(256, 8);
        let blocks: Vec<*mut u8> = (0..MAX_CACHED / 256 + 100)
            .map(|_| unsafe { a.alloc(l) })
            .collect();
        for b in blocks {
            unsafe { a.dealloc(b, l) };
        }
        assert_eq!(unsafe { (*a.lists.get()).cached }, MAX_CACHED);
    }

    proptest! {
        /// Any interleaving of allocations, reallocations and frees: every live block keeps
        /// its own bytes, whatever the cache handed out.
        #[test]
        fn live_blocks_never_overlap(ops in prop::collection::vec((0usize..4, 1usize..400, 0usize..64), 1..300)) {
            let a = SmallBlocks::new(System);
            let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
            for (i, (op, size, pick)) in ops.into_iter().enumerate() {
                let fill = i as u8;
                unsafe {
                    match op {
                        0 | 1 => {
                            let l = layout(size, 1 << (pick % 5));
                            let p = a.alloc(l);
                            p.write_bytes(fill, size);
                            live.push((p, l, fill));
                        }
                        2 if !live.is_empty() => {
                            let (p, l, f) = live.swap_remove(pick % live.len());
                            let q = a.realloc(p, l, size);
                            let kept = l.size().min(size);
                            prop_assert!(std::slice::from_raw_parts(q, kept).iter().all(|b| *b == f));
                            q.write_bytes(fill, size);
                            live.push((q, layout(size, l.align()), fill));
                        }
                        _ if !live.is_empty() => {
                            let (p, l, _) = live.swap_remove(pick % live.len());
                            a.dealloc(p, l);
                        }
                        _ => {}
                    }
                    for (p, l, f) in &live {
                        prop_assert!(std::slice::from_raw_parts(*p, l.size()).iter().all(|b| b == f));
                    }
                }
            }
            for (p, l, _) in live {
                unsafe { a.dealloc(p, l) };
            }
        }
    }
}
