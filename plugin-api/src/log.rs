//! Getting a plugin's `tracing` events and panics into the host's log.
//!
//! A plugin carries its own copy of `tracing` (and of `std`), whose global dispatcher and
//! panic hook are not the host's. So at load the plugin installs, in its own copies, a
//! subscriber and a panic hook that hand each event's text to the host, which logs it
//! tagged with the plugin's name and generation. Spans are not forwarded: the host's log
//! lines are flat.

use std::fmt::Write as _;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span;
use tracing::{Event, Level, Metadata, Subscriber};

use crate::ffi::{level, FfiStr, LoadArgs};

struct HostLog {
    ctx: usize,
    log: unsafe extern "C" fn(*const std::ffi::c_void, u8, FfiStr, FfiStr),
}

/// Set once per image: a plugin image is loaded, and its entry point called, once.
static HOST: OnceLock<HostLog> = OnceLock::new();

/// Routes this image's `tracing` events and panic messages to the host.
pub(crate) fn install(args: &LoadArgs) {
    let max = match args.max_level {
        0 => LevelFilter::OFF,
        level::ERROR => LevelFilter::ERROR,
        level::WARN => LevelFilter::WARN,
        level::INFO => LevelFilter::INFO,
        level::DEBUG => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let _ = HOST.set(HostLog {
        ctx: args.ctx as usize,
        log: args.log,
    });
    let _ = tracing::subscriber::set_global_default(Forward { max });
    std::panic::set_hook(Box::new(|info| {
        let mut text = String::from("panic");
        if let Some(at) = info.location() {
            let _ = write!(text, " at {at}");
        }
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let _ = write!(text, ": {what}");
        forward(level::ERROR, "panic", &text);
    }));
}

fn forward(level: u8, target: &str, text: &str) {
    if let Some(h) = HOST.get() {
        // SAFETY: the host keeps `log` and `ctx` valid until the plugin is dropped, and
        // no plugin code runs after that.
        unsafe {
            (h.log)(
                h.ctx as *const _,
                level,
                FfiStr::new(target),
                FfiStr::new(text),
            )
        }
    }
}

struct Forward {
    max: LevelFilter,
}

impl Subscriber for Forward {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= &self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut text = Text::default();
        event.record(&mut text);
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => level::ERROR,
            Level::WARN => level::WARN,
            Level::INFO => level::INFO,
            Level::DEBUG => level::DEBUG,
            Level::TRACE => level::TRACE,
        };
        text.message.push_str(&text.fields);
        forward(level, meta.target(), &text.message);
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// An event as one line: the message, then ` key=value` per other field.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}
