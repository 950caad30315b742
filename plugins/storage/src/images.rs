//! The images folder: names from requests, listing, streamed uploads, deletion.
//!
//! A name from a request is one path component, checked before any file system call,
//! and a symlink is followed only when it stays inside the folder, so no request reaches
//! a file outside it. Uploads go to a hidden temporary file that is linked to its name
//! only when the whole body arrived: a cut-off upload leaves nothing, and two uploads
//! of the same name cannot overwrite each other (linking refuses an existing name).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

/// Upload copy buffer: the memory one upload needs, whatever its size.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, PartialEq)]
pub enum ImageError {
    /// 400: the name is not a plain name inside the folder.
    BadName(String),
    /// 404
    Missing(String),
    /// 409
    Exists(String),
    /// 400: the body did not arrive whole.
    Cut(String),
    /// 507: the disk is full.
    Full(String),
    /// 500: any other file system failure.
    Io(String),
}

impl ImageError {
    pub fn status(&self) -> u16 {
        match self {
            ImageError::BadName(_) | ImageError::Cut(_) => 400,
            ImageError::Missing(_) => 404,
            ImageError::Exists(_) => 409,
            ImageError::Full(_) => 507,
            ImageError::Io(_) => 500,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            ImageError::BadName(r)
            | ImageError::Missing(r)
            | ImageError::Exists(r)
            | ImageError::Cut(r)
            | ImageError::Full(r)
            | ImageError::Io(r) => r,
        }
    }
}

pub struct Images {
    dir: PathBuf,
    uploads: AtomicU64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub mtime: u64,
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Images {
    /// The folder, created if missing.
    pub fn open(dir: PathBuf) -> Result<Images, String> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("images folder {}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("images folder {}: {e}", dir.display()))?;
        Ok(Images {
            dir,
            uploads: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks a name from a request: one plain component, not hidden.
    pub fn check_name(name: &str) -> Result<(), ImageError> {
        let bad = |why: &str| Err(ImageError::BadName(format!("image name {name:?} {why}")));
        if name.is_empty() {
            return bad("is empty");
        }
        if name.len() > 255 {
            return bad("is longer than 255 bytes");
        }
        if name.contains('/') || name.contains('\\') {
            return bad("has a path separator; give a bare file name");
        }
        if name.contains('\0') || name.chars().any(char::is_control) {
            return bad("has control characters");
        }
        if name.starts_with('.') {
            return bad("starts with '.' (., .. and hidden names are not images)");
        }
        Ok(())
    }

    /// The path of an existing image, following a symlink only if it stays inside.
    pub fn existing(&self, name: &str) -> Result<PathBuf, ImageError> {
        Self::check_name(name)?;
        let path = self.dir.join(name);
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|_| ImageError::Missing(format!("there is no image {name:?}")))?;
        if meta.file_type().is_symlink() {
            let target = path
                .canonicalize()
                .map_err(|_| ImageError::Missing(format!("image {name:?} is a dangling link")))?;
            if !target.starts_with(&self.dir) {
                return Err(ImageError::BadName(format!(
                    "image {name:?} is a link that leaves the images folder"
                )));
            }
            if !target.is_file() {
                return Err(ImageError::BadName(format!("image {name:?} is not a file")));
            }
            return Ok(target);
        }
        if !meta.is_file() {
            return Err(ImageError::BadName(format!("image {name:?} is not a file")));
        }
        Ok(path)
    }

    /// Regular files (and links to files inside the folder), by name.
    pub fn list(&self) -> Result<Vec<Listed>, ImageError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| ImageError::Io(format!("{}: {e}", self.dir.display())))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // Hidden uploads, folders and links that leave are not images.
            if let Ok(listed) = self.describe(&name) {
                out.push(listed);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One image's name, size and modification time.
    pub fn describe(&self, name: &str) -> Result<Listed, ImageError> {
        let path = self.existing(name)?;
        let meta = std::fs::metadata(&path)
            .map_err(|e| ImageError::Io(format!("{}: {e}", path.display())))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        Ok(Listed {
            name: name.to_string(),
            size: meta.len(),
            mtime,
        })
    }

    /// Streams `body` into a new image `name`; `expected` is the Content-Length, if any.
    pub fn upload(
        &self,
        name: &str,
        body: &mut dyn Read,
        expected: Option<u64>,
    ) -> Result<u64, ImageError> {
        Self::check_name(name)?;
        let path = self.dir.join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(ImageError::Exists(format!(
                "image {name:?} exists; DELETE it first"
            )));
        }
        let n = self.uploads.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".upload-{}-{n}", std::process::id()));
        let result = copy_into(&tmp, body, expected).and_then(|size| {
            // Linking refuses an existing name: a concurrent upload that finished
            // first keeps its image.
            std::fs::hard_link(&tmp, &path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    ImageError::Exists(format!("image {name:?} exists; DELETE it first"))
                } else {
                    ImageError::Io(format!("{}: {e}", path.display()))
                }
            })?;
            Ok(size)
        });
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// Deletes an image (the caller checked it is not mounted).
    pub fn delete(&self, name: &str) -> Result<(), ImageError> {
        self.existing(name)?;
        std::fs::remove_file(self.dir.join(name))
            .map_err(|e| ImageError::Io(format!("delete {name:?}: {e}")))
    }
}

fn copy_into(tmp: &Path, body: &mut dyn Read, expected: Option<u64>) -> Result<u64, ImageError> {
    let io_error = |e: io::Error| {
        if e.raw_os_error() == Some(libc_enospc()) {
            ImageError::Full("the images folder's disk is full".into())
        } else {
            ImageError::Io(format!("{}: {e}", tmp.display()))
        }
    };
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io_error)?;
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ImageError::Cut(format!(
                    "the upload was cut off after {size} bytes: {e}"
                )))
            }
        };
        file.write_all(&buf[..n]).map_err(io_error)?;
        size += n as u64;
    }
    if let Some(want) = expected {
        if want != size {
            return Err(ImageError::Cut(format!(
                "the upload ended after {size} of {want} bytes"
            )));
        }
    }
    file.sync_all().map_err(io_error)?;
    Ok(size)
}

/// ENOSPC without a libc dependency: 28 on every Linux architecture.
fn libc_enospc() -> i32 {
    28
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(tag: &str) -> (PathBuf, Images) {
        let root = std::env::temp_dir().join(format!("jsipd-images-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let images = Images::open(root.join("images")).unwrap();
        (root, images)
    }

    struct CutOff(usize);
    impl Read for CutOff {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "client gone",
                ));
            }
            let n = self.0.min(buf.len());
            buf[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        for bad in [
            "",
            "..",
            ".",
            "../etc/passwd",
            "/etc/passwd",
            "a/b",
            ".hidden",
            "a\0b",
        ] {
            assert!(
                matches!(Images::check_name(bad), Err(ImageError::BadName(_))),
                "{bad:?}"
            );
        }
        assert!(Images::check_name("debian 12.iso").is_ok());
        assert_eq!(percent_decode("a%20b%2F..").as_deref(), Some("a b/.."));
        assert_eq!(percent_decode("%zz"), None);
    }

    #[test]
    fn upload_list_delete_and_links() {
        let (root, images) = folder("basic");
        let size = images.upload("a.iso", &mut &b"hello"[..], Some(5)).unwrap();
        assert_eq!(size, 5);
        assert_eq!(
            images.upload("a.iso", &mut &b"again"[..], None),
            Err(ImageError::Exists(
                "image \"a.iso\" exists; DELETE it first".into()
            ))
        );
        std::fs::write(root.join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("secret"), images.dir().join("out.iso")).unwrap();
        std::os::unix::fs::symlink(images.dir().join("a.iso"), images.dir().join("in.iso"))
            .unwrap();
        assert!(matches!(
            images.existing("out.iso"),
            Err(ImageError::BadName(_))
        ));
        assert!(images.existing("in.iso").is_ok());
        let names: Vec<String> = images.list().unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["a.iso", "in.iso"]);
        assert!(matches!(
            images.delete("nope.iso"),
            Err(ImageError::Missing(_))
        ));
        images.delete("a.iso").unwrap();
        assert!(images.list().unwrap().is_empty(), "in.iso now dangles");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_cut_off_or_short_upload_leaves_nothing() {
        let (root, images) = folder("cut");
        let e = images
            .upload("big.iso", &mut CutOff(300_000), None)
            .unwrap_err();
        assert!(matches!(e, ImageError::Cut(_)), "{e:?}");
        let e = images
            .upload("big.iso", &mut &b"12345"[..], Some(10))
            .unwrap_err();
        assert_eq!(e.reason(), "the upload ended after 5 of 10 bytes");
        let left: Vec<_> = std::fs::read_dir(images.dir()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
