pub mod keymap;
pub mod keys;
