//! Which files may be loaded, and the private copy each load runs from.
//!
//! `file=` comes from an HTTP request, so it is treated as hostile: only a bare file
//! name inside `plugins/`, naming a regular file (a link is followed only if it stays
//! inside the folder) that nobody but its owner can rewrite. The copy is what makes a
//! rebuilt `echo.so` load as new code: `dlopen` of a path it already has open returns
//! the old image.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a request cannot be served, with the HTTP status it deserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

pub fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
    }
}

/// SLP names are used in Router host labels and `type=`: letters, digits, `-`, `_`.
pub fn check_slp_name(name: &str) -> Result<(), Refusal> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(refuse(
            400,
            format!("'{name}' is not a valid SLP name: use 1 to 64 letters, digits, '-' or '_'"),
        ))
    }
}

/// API names are `NAME.vN`, mounted at `/NAME/vN/`. Returns (NAME, vN).
pub fn split_api_name(full: &str) -> Result<(&str, &str), Refusal> {
    let bad = || {
        refuse(
            400,
            format!("'{full}' is not a valid API name: use NAME.vN, for example echo.v1"),
        )
    };
    let (name, version) = full.rsplit_once('.').ok_or_else(bad)?;
    let digits = version.strip_prefix('v').ok_or_else(bad)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    check_slp_name(name).map_err(|_| bad())?;
    Ok((name, version))
}

/// The file a `file=` names, after every check; the error says which check failed.
pub fn resolve(plugins_dir: &Path, file: &str) -> Result<PathBuf, Refusal> {
    if file.is_empty() {
        return Err(refuse(400, "file= is missing: name a .so file in plugins/"));
    }
    if file.starts_with('/') {
        return Err(refuse(
            400,
            format!("file={file} is an absolute path; give a bare file name inside plugins/"),
        ));
    }
    if file.contains('/') || file == ".." || file == "." || file.contains('\0') {
        return Err(refuse(
            400,
            format!("file={file} is not a bare file name; plugins load only from plugins/"),
        ));
    }
    if !file.ends_with(".so") || file.starts_with('.') {
        return Err(refuse(
            400,
            format!("file={file} is not a plugin file name (NAME.so)"),
        ));
    }
    let path = plugins_dir.join(file);
    let meta = fs::symlink_metadata(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => refuse(
            404,
            format!("plugins/{file} does not exist (build it with pcompile)"),
        ),
        _ => refuse(400, format!("plugins/{file}: {e}")),
    })?;
    if meta.file_type().is_symlink() {
        let dir =
            fs::canonicalize(plugins_dir).map_err(|e| refuse(500, format!("plugins/: {e}")))?;
        let target = fs::canonicalize(&path).map_err(|e| {
            refuse(
                400,
                format!("plugins/{file} is a link that does not resolve: {e}"),
            )
        })?;
        if target.parent() != Some(dir.as_path()) {
            return Err(refuse(
                400,
                format!(
                    "plugins/{file} is a link out of plugins/ (to {}); copy the file in instead",
                    target.display()
                ),
            ));
        }
    }
    let meta = fs::metadata(&path).map_err(|e| refuse(400, format!("plugins/{file}: {e}")))?;
    if !meta.is_file() {
        return Err(refuse(400, format!("plugins/{file} is not a regular file")));
    }
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(refuse(
            400,
            format!("plugins/{file} is world-writable; anyone could replace its code (chmod o-w)"),
        ));
    }
    Ok(path)
}

/// Copies `source` to `dest` (created 0600, never over an existing file) and returns
/// the SHA-256 of what was copied, so two loads of identical bytes can be recognised.
pub fn stage(source: &Path, dest: &Path) -> std::io::Result<String> {
    let mut from = fs::File::open(source)?;
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
        to.write_all(&buf[..n])?;
    }
    // No fsync: the copy is opened and unlinked right away, and never outlives a crash
    // in any useful way (restore() clears leftovers).
    Ok(digest
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_slp_name("echo-2_x").is_ok());
        assert_eq!(check_slp_name("a.b").unwrap_err().status, 400);
        assert_eq!(check_slp_name("").unwrap_err().status, 400);
        assert_eq!(split_api_name("echo.v1").unwrap(), ("echo", "v1"));
        for bad in ["echo", "echo.1", "echo.v", "echo.vx", ".v1", "a/b.v1"] {
            assert!(split_api_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        fs::create_dir(&plugins).unwrap();
        fs::write(plugins.join("ok.so"), b"x").unwrap();
        fs::write(dir.path().join("out.so"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("out.so"), plugins.join("link.so")).unwrap();
        std::os::unix::fs::symlink(plugins.join("ok.so"), plugins.join("inside.so")).unwrap();
        fs::write(plugins.join("open.so"), b"x").unwrap();
        fs::set_permissions(plugins.join("open.so"), fs::Permissions::from_mode(0o666)).unwrap();
        fs::create_dir(plugins.join("dir.so")).unwrap();

        assert!(resolve(&plugins, "ok.so").is_ok());
        assert!(resolve(&plugins, "inside.so").is_ok());
        let why = |f: &str| resolve(&plugins, f).unwrap_err();
        assert!(why("../out.so").reason.contains("bare file name"));
        assert!(why("/etc/passwd.so").reason.contains("absolute"));
        assert_eq!(why("missing.so").status, 404);
        assert!(why("link.so").reason.contains("link out of plugins/"));
        assert!(why("open.so").reason.contains("world-writable"));
        assert!(why("dir.so").reason.contains("not a regular file"));
        assert!(why("ok.txt").reason.contains("NAME.so"));
        assert!(why("").reason.contains("missing"));
    }

    #[test]
    fn staging_hashes_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.so");
        fs::write(&src, b"abc").unwrap();
        let dest = dir.path().join("copy");
        let digest = stage(&src, &dest).unwrap();
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fs::read(&dest).unwrap(), b"abc");
        assert!(stage(&src, &dest).is_err());
    }
}
