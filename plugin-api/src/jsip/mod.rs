//! The JSIP message model shared by the daemon and plugins (JSIP.md §2).

mod message;
mod reason;
mod uri;

pub use message::{Kind, LentMessage, Message, Method, ParseError, CALLER_KEY};
pub use reason::reason_phrase;
pub use uri::{parse_router, router_first, Uri, UriError, UriRef};
