//! The JSIP stack: transactions and dialogs (JSIP.md §3–§4) as a sans-IO state machine.
//!
//! Message syntax and URIs live in `jsipd-plugin-api` (`jsip::Message`, `jsip::Uri`),
//! because plugins read and write the same messages. This module adds what only the
//! daemon does: remember transactions and dialogs, answer for the SLP where JSIP says
//! the stack answers, and keep time. The driver that feeds it sockets and SLP runners
//! is `crate::node`.

mod dialog_index;
mod kept;
mod stack;
mod timer;
mod transactions;

pub use stack::{
    peer_name, Action, Actions, Counters, Delivery, DialogView, InstanceId, Output, PeerName,
    Stack, StackConfig, TransactionView,
};

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
