//! Finds the line a section or key sits on.
//!
//! rust-ini reports line numbers for syntax errors only; a bad *value* is found after
//! parsing, when the line is gone. This scan recovers it so that every message can say
//! `jsipd.ini:12: [APIServer] listen: ...`.

pub struct Locator<'a> {
    text: &'a str,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        Locator { text }
    }

    /// Lines (1-based) where `[section]` is opened.
    pub fn section(&self, section: &str) -> Option<usize> {
        self.entries()
            .find(|(_, s, k)| k.is_none() && s.as_deref() == Some(section))
            .map(|(line, _, _)| line)
    }

    /// Every line (1-based) that sets `name` inside `section`, in file order.
    pub fn key(&self, section: Option<&str>, name: &str) -> Vec<usize> {
        self.entries()
            .filter(|(_, s, k)| s.as_deref() == section && k.as_deref() == Some(name))
            .map(|(line, _, _)| line)
            .collect()
    }

    /// Lines rust-ini would misplace or accept oddly: an unclosed `[section` (rust-ini
    /// reports it at end of file) and a line that is neither a section nor `key = value`.
    pub fn syntax_errors(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, raw) in self.text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                if !line.ends_with(']') {
                    out.push((
                        i + 1,
                        format!("malformed section header '{line}' (expected [Name])"),
                    ));
                }
            } else if !line.contains(['=', ':']) {
                out.push((
                    i + 1,
                    format!("malformed line '{line}' (expected key = value)"),
                ));
            }
        }
        out
    }

    /// (line, current section, key) for section headers (key `None`) and key lines.
    fn entries(&self) -> impl Iterator<Item = (usize, Option<String>, Option<String>)> + '_ {
        let mut section: Option<String> = None;
        self.text.lines().enumerate().filter_map(move |(i, raw)| {
            let line = raw.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                return None;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let name = rest.split(']').next().unwrap_or("").trim().to_string();
                section = Some(name);
                return Some((i + 1, section.clone(), None));
            }
            let end = line.find(['=', ':']).unwrap_or(line.len());
            let key = line[..end].trim().to_string();
            Some((i + 1, section.clone(), Some(key)))
        })
    }
}
