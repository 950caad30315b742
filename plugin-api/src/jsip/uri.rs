//! JSIP URIs: `[user@]host[:port][;key[=value]]*`.
//!
//! The user part may contain `:` (`room:888@example.com` has user `room:888`), so the
//! user ends at the *last* `@` before the parameters. Parameters of interest to the
//! stack are `type=NAME` (choose an SLP) and `relid=ID` (join an SLP instance).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    pub user: Option<String>,
    /// Host name or IP; IPv6 literals keep their brackets.
    pub host: String,
    pub port: Option<u16>,
    /// In order of appearance; a key without `=` has value `None`.
    pub params: Vec<(String, Option<String>)>,
}

/// Why a URI did not parse; the text says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriError(pub String);

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UriError {}

/// `s` split at the last `byte`, an ASCII one (so both sides are `str`s).
///
/// The URI's own scans go byte by byte: every first request's URI is parsed (to pick its
/// SLP), and `str`'s char searchers cost several times more on text this short.
fn rsplit_at(s: &str, byte: u8) -> Option<(&str, &str)> {
    let at = s.bytes().rposition(|b| b == byte)?;
    Some((&s[..at], &s[at + 1..]))
}

/// Whether `s` has white space (`char::is_whitespace`), looking at each char only when
/// `s` is not ASCII.
fn has_white_space(s: &str) -> bool {
    if s.is_ascii() {
        // `char::is_whitespace` on ASCII; `u8::is_ascii_whitespace` leaves out \x0B.
        s.bytes()
            .any(|b| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r'))
    } else {
        s.contains(char::is_whitespace)
    }
}

/// A URI read in place: [`Uri::parse`]'s parse and checks, its parts borrowed from the
/// text. The stack reads the Router or Request-URI of every dialog's first request only
/// to pick an SLP; an owned [`Uri`] would copy each part into a `String` for that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UriRef<'a> {
    pub user: Option<&'a str>,
    /// Host name or IP; IPv6 literals keep their brackets.
    pub host: &'a str,
    pub port: Option<u16>,
    /// The parameters' text (after the first `;`, each one checked), read by
    /// [`UriRef::params`].
    params: Option<&'a str>,
}

impl<'a> UriRef<'a> {
    pub fn parse(text: &'a str) -> Result<UriRef<'a>, UriError> {
        UriRef::parse_plain(text).map_or_else(|| UriRef::parse_checked(text), Ok)
    }

    /// The usual URI (`user@host`, maybe a port and parameters) in one pass over its
    /// bytes; `None` for anything else, every invalid URI included, which
    /// [`UriRef::parse_checked`] then reads. What this accepts it reads exactly as that
    /// does (tested against it). Every dialog's first request has its URI read at least
    /// twice (to pick an SLP, and by the SLP), and the checked parse's eight passes cost
    /// some 400 instructions for `bench@echo`.
    fn parse_plain(text: &'a str) -> Option<UriRef<'a>> {
        let bytes = text.as_bytes();
        // The last `@` and `:` of the address, where the address ends, and the last
        // byte a host may not have.
        let (mut at, mut colon, mut not_host, mut end) = (None, None, None, bytes.len());
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b';' => {
                    end = i;
                    break;
                }
                b'@' => at = Some(i),
                b':' => colon = Some(i),
                b'/' | b',' => not_host = Some(i),
                // IPv6 literals, white space, other control characters and non-ASCII
                // text are left to the checked parse.
                b'[' | b']' | 0..=b' ' | 0x80.. => return None,
                _ => {}
            }
        }
        // Each parameter has a name: none is empty, and there are no white space or
        // other bytes the checked parse looks at more closely.
        if end < bytes.len() {
            let mut name_starts = true;
            for &b in &bytes[end + 1..] {
                match b {
                    0..=b' ' | 0x80.. => return None,
                    b';' | b'=' if name_starts => return None,
                    _ => {}
                }
                name_starts = b == b';';
            }
            if name_starts {
                return None;
            }
        }
        let host_from = match at {
            Some(0) => return None,
            Some(a) => a + 1,
            None => 0,
        };
        if not_host.is_some_and(|i| i >= host_from) {
            return None;
        }
        let (host_to, port) = match colon.filter(|&c| c >= host_from) {
            Some(c) => (c, Some(plain_port(&bytes[c + 1..end])?)),
            None => (end, None),
        };
        if host_to == host_from {
            return None;
        }
        Some(UriRef {
            user: at.map(|a| &text[..a]),
            host: &text[host_from..host_to],
            port,
            params: (end < bytes.len()).then(|| &text[end + 1..]),
        })
    }

    /// [`UriRef::parse`] with every check and a reason for each refusal.
    fn parse_checked(text: &'a str) -> Result<UriRef<'a>, UriError> {
        let bad = |why: &str| UriError(format!("bad URI '{text}': {why}"));
        let text_trim = text.trim();
        if text_trim.is_empty() {
            return Err(bad("empty"));
        }
        if has_white_space(text_trim) {
            return Err(bad("contains white space"));
        }
        let (address, params) = match text_trim.bytes().position(|b| b == b';') {
            Some(at) => (&text_trim[..at], Some(&text_trim[at + 1..])),
            None => (text_trim, None),
        };
        if params
            .into_iter()
            .flat_map(split_params)
            .any(|(k, _)| k.is_empty())
        {
            return Err(bad("parameter without a name"));
        }
        let (user, hostport) = match rsplit_at(address, b'@') {
            Some(("", h)) => return Err(bad(&format!("empty user before '@{h}'"))),
            Some((u, h)) => (Some(u), h),
            None => (None, address),
        };
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (v6, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in IPv6 host"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("junk after IPv6 host"))?,
                ),
            };
            // `[`, the address and `]`, as written.
            (&hostport[..v6.len() + 2], port)
        } else {
            match rsplit_at(hostport, b':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("no host"));
        }
        if host
            .bytes()
            .any(|b| matches!(b, b'@' | b'/' | b',' | b'[' | b']'))
            && !host.starts_with('[')
        {
            return Err(bad("invalid character in host"));
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| bad(&format!("port '{p}' is not a number 0-65535")))?,
            ),
        };
        Ok(UriRef {
            user,
            host,
            port,
            params,
        })
    }

    /// The parameters in order of appearance; a key without `=` has value `None`.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + use<'a> {
        self.params.into_iter().flat_map(split_params)
    }

    /// Value of parameter `key`: `None` if absent, `Some(None)` if present without `=`.
    pub fn param(&self, key: &str) -> Option<Option<&'a str>> {
        self.params().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// `type=NAME`: the SLP this request asks for.
    pub fn type_param(&self) -> Option<&'a str> {
        non_empty(self.param("type"))
    }

    /// `relid=ID`: the SLP instance this request joins.
    pub fn relid(&self) -> Option<&'a str> {
        non_empty(self.param("relid"))
    }

    /// As [`Uri::host_label`].
    pub fn host_label(&self) -> Option<&'a str> {
        host_label(self.host)
    }

    /// As [`Uri::user_at_host`].
    pub fn user_at_host(&self) -> String {
        user_at_host(self.user, self.host)
    }

    /// The owned [`Uri`].
    pub fn to_uri(&self) -> Uri {
        Uri {
            user: self.user.map(String::from),
            host: self.host.to_string(),
            port: self.port,
            params: self
                .params()
                .map(|(k, v)| (k.to_string(), v.map(String::from)))
                .collect(),
        }
    }
}

/// A port of one to five digits up to 65535; `None` for anything else (the checked
/// parse says why, or takes a `+`).
fn plain_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    let mut n: u32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(d - b'0');
    }
    u16::try_from(n).ok()
}

/// `key[=value]` for each `;`-separated parameter of `text`.
fn split_params(text: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    text.split(';').map(|p| match p.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (p, None),
    })
}

/// A parameter's value, when it has a non-empty one.
fn non_empty(value: Option<Option<&str>>) -> Option<&str> {
    value.flatten().filter(|v| !v.is_empty())
}

/// First DNS label of `host`; IP literals have none.
fn host_label(host: &str) -> Option<&str> {
    // Only a host that starts with a digit can be an IPv4 address: the parse, some 150
    // instructions, is left out for every other (an SLP's name).
    let ipv4 = host.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && host.parse::<std::net::Ipv4Addr>().is_ok();
    if host.starts_with('[') || ipv4 {
        return None;
    }
    // Up to the first dot, found byte by byte (`split`'s searcher cost 100 more).
    let label = match host.bytes().position(|b| b == b'.') {
        Some(dot) => &host[..dot],
        None => host,
    };
    (!label.is_empty()).then_some(label)
}

impl Uri {
    pub fn parse(text: &str) -> Result<Uri, UriError> {
        UriRef::parse(text).map(|u| u.to_uri())
    }

    /// Value of parameter `key`: `None` if absent, `Some(None)` if present without `=`.
    pub fn param(&self, key: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref())
    }

    /// `type=NAME`: the SLP this request asks for.
    pub fn type_param(&self) -> Option<&str> {
        non_empty(self.param("type"))
    }

    /// `relid=ID`: the SLP instance this request joins.
    pub fn relid(&self) -> Option<&str> {
        non_empty(self.param("relid"))
    }

    /// First DNS label of the host (`kvm` for `kvm.example.com`), used to pick an SLP
    /// when no `type=` is given. IP literals have none.
    pub fn host_label(&self) -> Option<&str> {
        host_label(&self.host)
    }

    /// `user@host` (the connection-registry name of an outbound target).
    pub fn user_at_host(&self) -> String {
        user_at_host(self.user.as_deref(), &self.host)
    }
}

/// `user@host`, or the host alone.
fn user_at_host(user: Option<&str>, host: &str) -> String {
    match user {
        Some(u) => format!("{u}@{host}"),
        None => host.to_string(),
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for (k, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        Ok(())
    }
}

/// The entries of a `Router` header: comma-separated URIs, first one routes.
pub fn parse_router(router: &str) -> Result<Vec<Uri>, UriError> {
    router.split(',').map(|u| Uri::parse(u.trim())).collect()
}

/// The entry of a `Router` header that routes (the first), read in place; an error if
/// any entry is not a URI, the same as [`parse_router`]'s.
pub fn router_first(router: &str) -> Result<UriRef<'_>, UriError> {
    let mut entries = router.split(',').map(|u| UriRef::parse(u.trim()));
    let first = entries.next().expect("split yields at least one entry")?;
    for entry in entries {
        entry?;
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_may_contain_colons() {
        let u = Uri::parse("room:888@example.com").unwrap();
        assert_eq!(u.user.as_deref(), Some("room:888"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, None);
        assert_eq!(u.host_label(), Some("example"));
    }

    #[test]
    fn full_form_round_trips() {
        let text = "kvm:console@kvm.example.com:8080;type=kvm;relid=42;lr";
        let u = Uri::parse(text).unwrap();
        assert_eq!(u.user.as_deref(), Some("kvm:console"));
        assert_eq!(u.host, "kvm.example.com");
        assert_eq!(u.port, Some(8080));
        assert_eq!(u.type_param(), Some("kvm"));
        assert_eq!(u.relid(), Some("42"));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.param("nope"), None);
        assert_eq!(u.to_string(), text);
        assert_eq!(u.user_at_host(), "kvm:console@kvm.example.com");
    }

    #[test]
    fn host_only_and_ipv6() {
        let u = Uri::parse("kvm.example.com;type=kvm").unwrap();
        assert_eq!(
            (u.user.as_deref(), u.host.as_str(), u.type_param()),
            (None, "kvm.example.com", Some("kvm"))
        );
        let v6 = Uri::parse("bob@[::1]:9000").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", Some(9000)));
        assert_eq!(v6.host_label(), None);
        assert_eq!(Uri::parse("10.0.0.1").unwrap().host_label(), None);
        assert_eq!(Uri::parse(".example").unwrap().host_label(), None);
        assert_eq!(Uri::parse("echo").unwrap().host_label(), Some("echo"));
        // A name may start with a digit too.
        assert_eq!(
            Uri::parse("1and1.example").unwrap().host_label(),
            Some("1and1")
        );
    }

    #[test]
    fn malformed_uris_say_why() {
        for (text, why) in [
            ("", "empty"),
            ("@host", "empty user"),
            ("bob@", "no host"),
            ("bob@host:99999", "not a number"),
            ("bob@host:x", "not a number"),
            ("bob@[::1", "unclosed"),
            ("bob@host;=v", "parameter without a name"),
            ("bob @host", "white space"),
            ("bob\x0B@host", "white space"),
            ("bob@ho\u{a0}st", "white space"),
            ("bob@host;a\u{3000}b", "white space"),
            ("bob@ho/st", "invalid character"),
            ("bob@host;type=x;", "parameter without a name"),
        ] {
            let e = Uri::parse(text).unwrap_err();
            assert!(e.0.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn non_ascii_text_is_kept_whole() {
        let u = Uri::parse("jürgen@bücher.example:7;ä=ö").unwrap();
        assert_eq!(u.user.as_deref(), Some("jürgen"));
        assert_eq!((u.host.as_str(), u.port), ("bücher.example", Some(7)));
        assert_eq!(u.param("ä"), Some(Some("ö")));
        assert_eq!(u.to_string(), "jürgen@bücher.example:7;ä=ö");
    }

    #[test]
    fn read_in_place_it_is_the_same_uri_without_copies() {
        for text in [
            "kvm:console@kvm.example.com:8080;type=kvm;relid=42;lr",
            "bob@[::1]:9000",
            "kvm.example.com;type=",
            "10.0.0.1",
        ] {
            let r = UriRef::parse(text).unwrap();
            let u = Uri::parse(text).unwrap();
            assert_eq!(r.to_uri(), u);
            assert_eq!((r.type_param(), r.relid()), (u.type_param(), u.relid()));
            assert_eq!(r.param("lr"), u.param("lr"));
            assert_eq!(r.host_label(), u.host_label());
            assert_eq!(r.user_at_host(), u.user_at_host());
            // The host is a slice of the text itself.
            let at = r.host.as_ptr() as usize - text.as_ptr() as usize;
            assert_eq!(&text[at..at + r.host.len()], r.host);
        }
        // The first entry routes; a bad later one is the same error as the list's.
        let first = router_first("a.example.com;type=echo, b@c.example.com").unwrap();
        assert_eq!(first.type_param(), Some("echo"));
        for router in ["ok.com,,x", "@h, ok.com", "ok.com, bad host"] {
            assert_eq!(
                router_first(router).unwrap_err(),
                parse_router(router).unwrap_err()
            );
        }
    }

    /// The one-pass parse reads what it accepts as the checked parse does, and leaves
    /// every URI that parse refuses to it: all strings over an alphabet of the bytes
    /// either looks at, up to five long, and some longer ones.
    #[test]
    fn the_plain_parse_agrees_with_the_checked_one() {
        let alphabet = [
            "a", "1", "@", ":", ";", "=", "/", ",", "[", "]", " ", "é", ".",
        ];
        let mut texts: Vec<String> = vec![String::new()];
        let mut all = Vec::new();
        for _ in 0..5 {
            texts = texts
                .iter()
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            all.extend(texts.iter().cloned());
        }
        all.extend(
            [
                "bench@echo",
                "room:888@example.com:5060;type=chat;relid=7;lr",
                "a@b:65535",
                "a@b:65536",
                "a@b:+5",
                "a@b:007",
                "a@b:123456",
                "kvm.example.com;type=",
                "a@b;x;;y",
                "a@b;x\t",
                "a/b@c,d",
                "a@b\x7f",
            ]
            .map(String::from),
        );
        for text in &all {
            let checked = UriRef::parse_checked(text);
            match UriRef::parse_plain(text) {
                Some(fast) => {
                    assert_eq!(Ok(fast), checked, "{text:?}");
                    assert!(fast.params().eq(checked.unwrap().params()), "{text:?}");
                }
                // Only white space, IPv6 brackets, non-ASCII text and a port's `+` are
                // left to the checked parse when it would accept them.
                None => assert!(
                    checked.is_err()
                        || text.contains(char::is_whitespace)
                        || text.contains(['[', ']', 'é', '+']),
                    "{text:?} is valid but not read in one pass"
                ),
            }
        }
    }

    #[test]
    fn router_lists() {
        let r = parse_router("a.example.com;type=echo, b@c.example.com").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].type_param(), Some("echo"));
        assert_eq!(r[1].user.as_deref(), Some("b"));
        assert!(parse_router("ok.com,,x").is_err());
    }
}
