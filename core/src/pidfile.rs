//! `logs/jsipd.pid`: written once the ports are bound, removed at exit; `jsipd -s`
//! reads it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes our pid, refusing when the file names another live jsipd.
    pub fn create(path: &Path) -> anyhow::Result<PidFile> {
        if let Some(pid) = read(path)
            .ok()
            .filter(|&p| p != std::process::id() && is_jsipd(p))
        {
            bail!(
                "jsipd is already running as pid {pid} (pid file {})",
                path.display()
            );
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing pid file {}", path.display()))?;
        Ok(PidFile {
            path: path.to_owned(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read(&self.path).ok() == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub fn read(path: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read pid file {} (is jsipd running?)",
            path.display()
        )
    })?;
    text.trim()
        .parse()
        .with_context(|| format!("pid file {} does not hold a pid", path.display()))
}

fn is_jsipd(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "jsipd")
}

/// Sends `sig` to the pid in `path`.
pub fn signal(path: &Path, sig: libc::c_int) -> anyhow::Result<u32> {
    let pid = read(path)?;
    let pid_t = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid_t, sig) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "cannot signal pid {pid} from {}: {e} (stale pid file?)",
            path.display()
        );
    }
    Ok(pid)
}
