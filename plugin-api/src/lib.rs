//! `jsipd-plugin-api`: all a jsipd plugin depends on.
//!
//! For now this crate holds the JSIP message model ([`jsip`]), which the daemon's
//! stack and plugins share so that both read and write messages the same way.
//! The SLP/API traits, host services and the export macro come with the plugin system.

pub mod jsip;
