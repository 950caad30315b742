//! What a storage backend is: a drive that takes one image at a time.

use std::path::Path;

#[derive(Debug, PartialEq)]
pub enum MediaError {
    /// 503: the device is not there (no UDC, QEMU not running); the reason says which.
    Unavailable(String),
    /// 500: the device refused; the reason is its own words.
    Failed(String),
}

impl MediaError {
    pub fn status(&self) -> u16 {
        match self {
            MediaError::Unavailable(_) => 503,
            MediaError::Failed(_) => 500,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            MediaError::Unavailable(r) | MediaError::Failed(r) => r,
        }
    }
}

/// How an image is presented to the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Presentation {
    /// A CD-ROM (always read-only), else a USB stick / disk.
    pub cdrom: bool,
    pub readonly: bool,
}

pub trait Media: Send + Sync {
    /// Presents `image` to the target. Nothing is mounted when this is called.
    fn mount(&self, image: &Path, how: Presentation) -> Result<(), MediaError>;

    /// Takes the medium away (what was mounted with `how`).
    fn unmount(&self, how: Presentation) -> Result<(), MediaError>;

    fn describe(&self) -> String;
}
