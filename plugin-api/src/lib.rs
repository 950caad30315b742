//! `jsipd-plugin-api`: all a jsipd plugin depends on.
//!
//! - [`jsip`]: the JSIP message model, shared by the daemon's stack and plugins so that
//!   both read and write messages the same way.
//! - [`slp`]: the service-logic contract ([`slp::Slp`], [`slp::Instance`], [`slp::Host`])
//!   through which the daemon's dispatch layer drives every SLP.
//!
//! The `.so` boundary (ABI record, export macro) comes with the plugin system.

pub mod jsip;
pub mod slp;
