//! The daemon's allocator: mimalloc, for the daemon's own allocations and, through
//! `plugins::image`'s allocator functions (ABI 1.6), for every plugin's.
//!
//! It lives in the library, not in `main.rs`, so that those functions call it directly
//! rather than through `std::alloc`'s global-allocator shims (two calls fewer per plugin
//! allocation and free; callgrind could not tell the difference from its run-to-run
//! spread of about ±100 instructions per round trip). The library's tests run on it
//! too, so a plugin they load shares their allocator as it shares the daemon's.

#[global_allocator]
pub static GLOBAL: Mimalloc = Mimalloc;

/// mimalloc as the global allocator, calling its plain `mi_malloc` for the alignments
/// every block has (8 bytes): almost every allocation (strings, boxes, vectors of
/// pointers). `mi_malloc_aligned`, which the `mimalloc` crate calls for all of them,
/// costs twice the instructions on its way to the same free list, and a JSIP round trip
/// makes some 40 allocations.
pub struct Mimalloc;

/// The alignment of every mimalloc block: its smallest size class is 8 bytes.
const BLOCK_ALIGN: usize = 8;

// SAFETY: mimalloc's functions uphold `GlobalAlloc`'s contract; a block from `mi_malloc`
// is aligned to `BLOCK_ALIGN`, and a larger alignment goes to the `_aligned` calls.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_malloc, mi_malloc_aligned};
        // SAFETY: a non-zero size, as `GlobalAlloc` guarantees.
        unsafe {
            if layout.align() <= BLOCK_ALIGN {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};
        // SAFETY: as in `alloc`.
        unsafe {
            if layout.align() <= BLOCK_ALIGN {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe {
            if layout.align() <= BLOCK_ALIGN {
                mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}
