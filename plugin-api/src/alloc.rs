//! The plugin allocates through the host's allocator (ABI 1.6).
//!
//! A `.so` built with Rust's default allocator gets the C library's `malloc`, while the
//! daemon runs on mimalloc: every message a plugin takes in, answers and drops costs a
//! dozen `malloc`/`free` pairs in the slower allocator, on the hottest path there is.
//! [`export_plugin!`](crate::export_plugin) therefore makes [`HostAllocator`] the
//! plugin's global allocator, and the entry point hands it the host's functions
//! ([`LoadArgs::alloc`](crate::ffi::LoadArgs)).
//!
//! The switch is safe only if nothing was allocated before it, since memory must be
//! freed by the allocator that gave it. So the choice is made once, by whichever comes
//! first: the host's functions (from then on, the host's allocator), or an allocation
//! (from then on, the C library's, for the life of the image, and the entry point says
//! so in the log). In practice nothing in a plugin allocates before its entry point.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::ffi::{HostAllocFn, HostDeallocFn, HostReallocFn};

const UNDECIDED: u8 = 0;
const HOST: u8 = 1;
const SYSTEM: u8 = 2;

/// Which allocator an image uses, decided once.
pub struct Choice {
    mode: AtomicU8,
    alloc: AtomicUsize,
    dealloc: AtomicUsize,
    realloc: AtomicUsize,
}

impl Choice {
    pub const fn new() -> Choice {
        Choice {
            mode: AtomicU8::new(UNDECIDED),
            alloc: AtomicUsize::new(0),
            dealloc: AtomicUsize::new(0),
            realloc: AtomicUsize::new(0),
        }
    }

    /// Offers the host's functions: `true` if they are used from now on, `false` if
    /// something was allocated with the C library's first (or they were offered before).
    pub fn offer_host(
        &self,
        alloc: HostAllocFn,
        dealloc: HostDeallocFn,
        realloc: HostReallocFn,
    ) -> bool {
        // Stored before the mode says HOST (release), read after it (acquire).
        self.alloc.store(alloc as usize, Ordering::Relaxed);
        self.dealloc.store(dealloc as usize, Ordering::Relaxed);
        self.realloc.store(realloc as usize, Ordering::Relaxed);
        self.mode
            .compare_exchange(UNDECIDED, HOST, Ordering::Release, Ordering::Acquire)
            .is_ok()
    }

    /// Whether the host's allocator is in use.
    pub fn uses_host(&self) -> bool {
        self.mode.load(Ordering::Acquire) == HOST
    }

    /// For an allocation: the mode, deciding for the C library's if nothing was decided.
    #[inline]
    fn for_allocation(&self) -> u8 {
        match self.mode.load(Ordering::Acquire) {
            UNDECIDED => match self.mode.compare_exchange(
                UNDECIDED,
                SYSTEM,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => SYSTEM,
                Err(decided) => decided,
            },
            decided => decided,
        }
    }

    /// # Safety
    /// As [`GlobalAlloc::alloc`].
    #[inline]
    pub unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.for_allocation() == HOST {
            // SAFETY: stored as a `HostAllocFn` before HOST was published.
            let f: HostAllocFn = unsafe { std::mem::transmute(self.alloc.load(Ordering::Relaxed)) };
            // SAFETY: the host's allocator, with a valid layout.
            unsafe { f(layout.size(), layout.align()) }
        } else {
            // SAFETY: the caller's contract.
            unsafe { System.alloc(layout) }
        }
    }

    /// # Safety
    /// As [`GlobalAlloc::dealloc`].
    #[inline]
    pub unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // A pointer exists only after the choice, which never changes.
        if self.mode.load(Ordering::Acquire) == HOST {
            // SAFETY: as in `alloc`.
            let f: HostDeallocFn =
                unsafe { std::mem::transmute(self.dealloc.load(Ordering::Relaxed)) };
            // SAFETY: `ptr` came from the host's allocator with `layout`.
            unsafe { f(ptr, layout.size(), layout.align()) }
        } else {
            // SAFETY: the caller's contract.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    /// # Safety
    /// As [`GlobalAlloc::realloc`].
    #[inline]
    pub unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.mode.load(Ordering::Acquire) == HOST {
            // SAFETY: as in `alloc`.
            let f: HostReallocFn =
                unsafe { std::mem::transmute(self.realloc.load(Ordering::Relaxed)) };
            // SAFETY: `ptr` came from the host's allocator with `layout`.
            unsafe { f(ptr, layout.size(), layout.align(), new_size) }
        } else {
            // SAFETY: the caller's contract.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

impl Default for Choice {
    fn default() -> Self {
        Choice::new()
    }
}

/// The image's one [`Choice`].
pub static CHOICE: Choice = Choice::new();

/// The global allocator [`export_plugin!`](crate::export_plugin) installs in a plugin.
pub struct HostAllocator;

// SAFETY: forwards to the chosen allocator, which upholds `GlobalAlloc`'s contract.
unsafe impl GlobalAlloc for HostAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { CHOICE.alloc(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { CHOICE.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { CHOICE.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static HOST_ALLOCS: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn counting_alloc(size: usize, align: usize) -> *mut u8 {
        HOST_ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: a valid layout from the caller.
        unsafe { System.alloc(Layout::from_size_align_unchecked(size, align)) }
    }
    unsafe extern "C" fn system_dealloc(ptr: *mut u8, size: usize, align: usize) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, Layout::from_size_align_unchecked(size, align)) }
    }
    unsafe extern "C" fn system_realloc(
        ptr: *mut u8,
        size: usize,
        align: usize,
        new: usize,
    ) -> *mut u8 {
        // SAFETY: as above.
        unsafe { System.realloc(ptr, Layout::from_size_align_unchecked(size, align), new) }
    }

    #[test]
    fn the_host_is_used_only_when_offered_before_any_allocation() {
        let layout = Layout::from_size_align(24, 8).unwrap();
        let early = Choice::new();
        // SAFETY: a valid layout; freed below with the same.
        let p = unsafe { early.alloc(layout) };
        assert!(!early.offer_host(counting_alloc, system_dealloc, system_realloc));
        assert!(!early.uses_host());
        // SAFETY: from `early.alloc` with `layout`.
        unsafe { early.dealloc(p, layout) };

        let before = HOST_ALLOCS.load(Ordering::Relaxed);
        let offered = Choice::new();
        assert!(offered.offer_host(counting_alloc, system_dealloc, system_realloc));
        assert!(offered.uses_host());
        // SAFETY: as above.
        unsafe {
            let p = offered.alloc(layout);
            let p = offered.realloc(p, layout, 64);
            offered.dealloc(p, Layout::from_size_align(64, 8).unwrap());
        }
        assert_eq!(HOST_ALLOCS.load(Ordering::Relaxed), before + 1);
        // Offered twice: the first offer stands.
        assert!(!offered.offer_host(counting_alloc, system_dealloc, system_realloc));
    }
}
