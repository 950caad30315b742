//! The JSIP message model shared by the daemon and plugins (JSIP.md §2).

mod message;
mod reason;
mod uri;

pub use message::{
    Extra, ExtraEntry, ExtraIter, Kind, LentMessage, Message, Method, ParseError, CALLER_KEY,
};
pub use reason::reason_phrase;
pub use uri::{parse_router, router_first, Uri, UriError, UriRef};

/// `text[from..to]` where the caller knows both ends are character boundaries because
/// each is 0, the length of `text`, or the index of an ASCII byte (a quote, a
/// separator) or of the byte just after one (the frame reader's string ends). The
/// checks `str` slicing makes (that each end is a boundary, with a panic path for each)
/// are left out: in the frame reader they cost some 250 instructions a frame, more than
/// the scan of the text itself. Checked in debug builds.
#[inline(always)]
pub(crate) fn cut_at_ascii(text: &str, from: usize, to: usize) -> &str {
    debug_assert!(from <= to && text.is_char_boundary(from) && text.is_char_boundary(to));
    // SAFETY: `from <= to <= text.len()` and both are character boundaries (above),
    // so the slice is valid UTF-8 within `text`.
    unsafe { text.get_unchecked(from..to) }
}
