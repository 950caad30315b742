//! The KVM plugins' config files: `conf/<plugin>/<plugin>.ini`.
//!
//! The same dialect as `conf/jsipd.ini`: `[section]` headers, `key = value` lines, and
//! comments starting with `;` or `#`. Keys before the first header belong to section
//! `""`. Errors name the file and line, because an operator reads them in the answer to
//! a refused plugin load.

use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, Clone)]
pub struct Ini {
    path: PathBuf,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    section: String,
    key: String,
    value: String,
}

impl Ini {
    /// Reads `path`; a missing file is an empty config (every key takes its default).
    pub fn read(path: &Path) -> Result<Ini, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ini::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ini {
                path: path.to_owned(),
                entries: Vec::new(),
            }),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Parses `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Ini, String> {
        let mut section = String::new();
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(format!(
                        "{} line {}: {line:?} opens a section but has no ']'",
                        path.display(),
                        i + 1
                    ));
                };
                section = name.trim().to_string();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!(
                    "{} line {}: {line:?} is neither [section] nor key = value",
                    path.display(),
                    i + 1
                ));
            };
            entries.push(Entry {
                line: i + 1,
                section: section.clone(),
                key: key.trim().to_string(),
                value: value.trim().to_string(),
            });
        }
        Ok(Ini {
            path: path.to_owned(),
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entry(&self, section: &str, key: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.section == section && e.key == key)
    }

    /// The value of `key` in `[section]` (the last one, if repeated).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.entry(section, key).map(|e| e.value.as_str())
    }

    /// `key` parsed as `T`, or `default` when absent; a value that does not parse is an
    /// error naming the line and what was expected.
    pub fn parse_or<T: FromStr>(
        &self,
        section: &str,
        key: &str,
        default: T,
        expected: &str,
    ) -> Result<T, String> {
        match self.entry(section, key) {
            None => Ok(default),
            Some(e) => e.value.parse().map_err(|_| {
                format!(
                    "{} line {}: [{section}] {key} = {:?}: expected {expected}",
                    self.path.display(),
                    e.line,
                    e.value
                )
            }),
        }
    }

    /// A yes/no switch: `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`.
    pub fn flag(&self, section: &str, key: &str, default: bool) -> Result<bool, String> {
        match self.entry(section, key) {
            None => Ok(default),
            Some(e) => match e.value.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" => Ok(false),
                _ => Err(format!(
                    "{} line {}: [{section}] {key} = {:?}: expected yes or no",
                    self.path.display(),
                    e.line,
                    e.value
                )),
            },
        }
    }

    /// Refuses keys (and sections) this plugin does not know: a typo must not silently
    /// leave a default in place. `known` lists each section with its keys.
    pub fn only(&self, known: &[(&str, &[&str])]) -> Result<(), String> {
        for e in &self.entries {
            let Some((_, keys)) = known.iter().find(|(s, _)| *s == e.section) else {
                let sections: Vec<String> = known.iter().map(|(s, _)| format!("[{s}]")).collect();
                return Err(format!(
                    "{} line {}: unknown section [{}]; known: {}",
                    self.path.display(),
                    e.line,
                    e.section,
                    sections.join(" ")
                ));
            };
            if !keys.contains(&e.key.as_str()) {
                return Err(format!(
                    "{} line {}: [{}] has no key {:?}; known: {}",
                    self.path.display(),
                    e.line,
                    e.section,
                    e.key,
                    keys.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// For the plugins' config tests: writes `text` as `file` into a folder of its own,
/// calls `read` with the folder, and removes it. Each call gets a new folder, so tests
/// running in parallel never read each other's file.
pub fn with_config_file<T>(file: &str, text: &str, read: impl FnOnce(&Path) -> T) -> T {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("jsipd-conf-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a scratch config folder");
    std::fs::write(dir.join(file), text).expect("write the scratch config file");
    let result = read(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_defaults_and_errors_that_name_the_line() {
        let p = Path::new("gpio.ini");
        let ini = Ini::parse(
            p,
            "; comment\nbackend = qemu\n[qemu]\nqmp = /run/q.sock\n# x\n[gpiochip]\npower = x\nactive_low = maybe\n",
        )
        .unwrap();
        assert_eq!(ini.get("", "backend"), Some("qemu"));
        assert_eq!(ini.get("qemu", "qmp"), Some("/run/q.sock"));
        assert_eq!(ini.get("qemu", "backend"), None);
        assert_eq!(
            ini.parse_or("gpiochip", "reset", 7u32, "a line number"),
            Ok(7)
        );
        assert_eq!(
            ini.parse_or("gpiochip", "power", 0u32, "a line number"),
            Err("gpio.ini line 7: [gpiochip] power = \"x\": expected a line number".into())
        );
        assert!(ini
            .flag("gpiochip", "active_low", false)
            .unwrap_err()
            .contains("line 8"));
        assert!(ini
            .only(&[("", &["backend"]), ("qemu", &["qmp"])])
            .unwrap_err()
            .contains("unknown section [gpiochip]"));
        assert!(ini
            .only(&[("", &["backends"]), ("qemu", &["qmp"]), ("gpiochip", &[])])
            .unwrap_err()
            .contains("line 2: [] has no key \"backend\""));
        assert!(Ini::parse(p, "[qemu\n").unwrap_err().contains("line 1"));
        assert!(Ini::parse(p, "just words\n")
            .unwrap_err()
            .contains("line 1"));
    }

    #[test]
    fn a_missing_file_is_an_empty_config() {
        let ini = Ini::read(Path::new("/nonexistent/jsipd/x.ini")).unwrap();
        assert_eq!(ini.get("", "backend"), None);
    }
}
