//! Dialog → SLP: choosing the SLP for a new dialog (`select`, JSIP.md §5) and running
//! SLP code on threads the host owns (`runner`).

pub mod runner;
pub mod select;
