//! Which SLP (or which existing instance) gets the first request of a new dialog:
//! JSIP.md §5, as a pure function so every rule is unit-tested without a stack.

use jsipd_plugin_api::jsip::{router_first, Message, UriRef};

/// Where a dialog-starting request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<S> {
    /// A new instance of this SLP: what `loaded` said of the name, so the caller
    /// does not look the name up a second time.
    New(S),
    /// The existing instance that handed out the `relid`.
    Join(u64),
}

/// A request no SLP takes: the status code and the `Reason` to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: String,
}

fn refuse(code: u16, reason: String) -> Refusal {
    Refusal { code, reason }
}

/// Applies §5's order: relid, `type=`, host label, `default`, else 404. Nothing is
/// copied: the URIs are read in place ([`UriRef`]). `loaded` looks an SLP name up.
pub fn select<S>(
    msg: &Message,
    loaded: impl Fn(&str) -> Option<S>,
    relid_owner: impl Fn(&str) -> Option<u64>,
) -> Result<Target<S>, Refusal> {
    let first = match &msg.router {
        Some(r) => Some(router_first(r).map_err(|e| refuse(400, format!("Router: {e}")))?),
        None => None,
    };
    if let Some(uri) = &first {
        if let Some(relid) = uri.relid() {
            return relid_owner(relid).map(Target::Join).ok_or_else(|| {
                refuse(
                    404,
                    format!("relid={relid}: no instance owns it (it ended, or never existed)"),
                )
            });
        }
        if let Some(name) = uri.type_param() {
            return if let Some(slp) = loaded(name) {
                Ok(Target::New(slp))
            } else {
                Err(refuse(
                    404,
                    format!("type={name}: no SLP of that name is loaded"),
                ))
            };
        }
    }
    let routed_by = match first {
        Some(uri) => Some(uri),
        None => msg
            .request_uri
            .as_deref()
            .and_then(|u| UriRef::parse(u).ok()),
    };
    if let Some(label) = routed_by.as_ref().and_then(UriRef::host_label) {
        if let Some(slp) = loaded(label) {
            return Ok(Target::New(slp));
        }
    }
    if let Some(slp) = loaded("default") {
        return Ok(Target::New(slp));
    }
    Err(refuse(
        404,
        "no SLP takes this request: no type= or relid= in Router, no SLP named after the host, and no 'default' SLP".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsipd_plugin_api::jsip::Method;

    fn msg(uri: &str, router: Option<&str>) -> Message {
        let mut m = Message::request(Method::Invite, uri, "a@x", "b@y", "d1", 1);
        m.router = router.map(String::from);
        m
    }

    fn pick(m: &Message, loaded: &[&'static str]) -> Result<Target<&'static str>, Refusal> {
        select(
            m,
            |n| loaded.iter().find(|l| **l == n).copied(),
            |r| (r == "r7").then_some(7),
        )
    }

    #[test]
    fn unparseable_router_is_400() {
        let e = pick(&msg("a@b", Some("x@;type=")), &["echo"]).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.reason.starts_with("Router: "), "{}", e.reason);
    }

    #[test]
    fn relid_joins_its_owner_or_404() {
        let m = msg("a@b", Some("echo.x;relid=r7;type=echo"));
        assert_eq!(pick(&m, &["echo"]), Ok(Target::Join(7)));
        let e = pick(&msg("a@b", Some("echo.x;relid=gone")), &["echo"]).unwrap_err();
        assert_eq!(e.code, 404);
        assert!(e.reason.contains("relid=gone"));
    }

    #[test]
    fn type_param_wins_over_host_label_and_is_404_when_not_loaded() {
        let m = msg("a@b", Some("echo.example.com;type=chat"));
        assert_eq!(pick(&m, &["echo", "chat"]), Ok(Target::New("chat")));
        let e = pick(&msg("a@b", Some("h;type=nosuch")), &["echo", "default"]).unwrap_err();
        assert_eq!(e.code, 404);
        assert!(e.reason.contains("type=nosuch"));
    }

    #[test]
    fn host_label_of_router_then_of_request_uri() {
        let m = msg("x@chat.example.com", Some("echo.example.com"));
        assert_eq!(pick(&m, &["echo", "chat"]), Ok(Target::New("echo")));
        let m = msg("x@chat.example.com", None);
        assert_eq!(pick(&m, &["echo", "chat"]), Ok(Target::New("chat")));
    }

    #[test]
    fn default_then_404() {
        let m = msg("x@nobody.example.com", None);
        assert_eq!(pick(&m, &["echo", "default"]), Ok(Target::New("default")));
        assert_eq!(pick(&m, &["echo"]).unwrap_err().code, 404);
        // An IP literal has no label to pick by.
        let m = msg("x@127.0.0.1:9", None);
        assert_eq!(pick(&m, &["127"]).unwrap_err().code, 404);
    }
}
