use super::*;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_ini_str(text, Some(Path::new("jsipd.ini")), Path::new("/opt/jsipd"))
}

fn only_error(text: &str) -> ConfigError {
    let errs = parse(text).expect_err("config must be rejected").0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn empty_file_gives_the_documented_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.api.listen, Some("127.0.0.1:2539".parse().unwrap()));
    assert_eq!(c.rtc_listen.listen, Some("0.0.0.0:8080".parse().unwrap()));
    assert_eq!(c.rtc_location, "/rtc");
    assert_eq!(c.stop_timeout, Duration::from_secs(5));
    assert_eq!(c.log_level, LevelFilter::INFO);
    assert_eq!(
        c.log_file,
        LogTarget::File("/opt/jsipd/logs/jsipd.log".into())
    );
    assert_eq!(c.api_key_file, PathBuf::from("/opt/jsipd/conf/api.key"));
    assert_eq!(c.api.tls_listen, None);
}

#[test]
fn values_are_read() {
    let c = parse("loglevel = debug\nlogfile=stdout\n[Main]\nstop_timeout = 250ms\n[APIServer]\nlisten = :0\naccesslog = off\n[RTCServer]\nlocation=/ws\n").unwrap();
    assert_eq!(c.log_level, LevelFilter::DEBUG);
    assert_eq!(c.log_file, LogTarget::Stdout);
    assert_eq!(c.stop_timeout, Duration::from_millis(250));
    assert_eq!(c.api.listen, Some("0.0.0.0:0".parse().unwrap()));
    assert_eq!(c.access_log, LogTarget::Off);
    assert_eq!(c.rtc_location, "/ws");
}

#[test]
fn unknown_key_names_line_and_key() {
    let e = only_error("[APIServer]\n\nlistn = 1.2.3.4:5\n");
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key.as_deref(), Some("[APIServer] listn"));
    assert_eq!(e.to_string(), "jsipd.ini:3: [APIServer] listn: unknown key");
}

#[test]
fn unknown_section_is_rejected() {
    let e = only_error("[Nope]\na = 1\n");
    assert_eq!(e.line, Some(1));
    assert!(e.message.contains("unknown section"), "{e}");
}

#[test]
fn bad_value_names_line_key_and_expectation() {
    let e = only_error("; c\n[Main]\nstop_timeout = soon\n");
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key.as_deref(), Some("[Main] stop_timeout"));
    assert!(e.message.contains("not a duration"), "{e}");
}

#[test]
fn every_error_is_reported_at_once() {
    let errs =
        parse("loglevel = loud\n[APIServer]\nlisten = nowhere\n[RTCServer]\nlocation = rtc\n")
            .unwrap_err()
            .0;
    let keys: Vec<_> = errs.iter().map(|e| e.key.clone().unwrap()).collect();
    assert_eq!(
        keys,
        ["loglevel", "[APIServer] listen", "[RTCServer] location"]
    );
}

#[test]
fn repeated_key_is_rejected() {
    let e = only_error("[APIServer]\nlisten = :1\nlisten = :2\n");
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("first set on line 2"), "{e}");
}

#[test]
fn malformed_line_reports_its_line() {
    let e = parse("loglevel = info\n[APIServer\nlisten = :1\n")
        .unwrap_err()
        .0
        .remove(0);
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn restart_needed_lists_only_changed_restart_keys() {
    let a = parse("[APIServer]\nlisten = :1\n").unwrap();
    let b = parse("loglevel = debug\n[APIServer]\nlisten = :2\n").unwrap();
    assert_eq!(a.restart_needed(&b), ["[APIServer] listen"]);
    let changed: Vec<_> = a.changed_keys(&b).map(|k| k.name).collect();
    assert_eq!(changed, ["loglevel", "listen"]);
    assert!(a.restart_needed(&a).is_empty());
}

/// The shipped file must document every key, each with its real default, so that
/// reading the file is enough to know what jsipd does.
#[test]
fn shipped_config_documents_every_key_with_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/jsipd.ini");
    let text = std::fs::read_to_string(&path).unwrap();
    let shipped = Config::from_ini_str(&text, Some(&path), Path::new("/p")).unwrap();
    assert_eq!(
        shipped,
        Config::defaults(Path::new("/p")).with_source(Some(path.clone()))
    );
    let mut section = None;
    let mut seen = Vec::new();
    for line in text.lines() {
        if let Some(s) = line.strip_prefix('[') {
            section = Some(s.trim_end_matches(']').to_string());
        } else if let Some(kv) = line.strip_prefix(';') {
            if let Some((k, v)) = kv.split_once('=') {
                seen.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    for key in schema::KEYS {
        let entry = (
            key.section.map(String::from),
            key.name.to_string(),
            key.default.to_string(),
        );
        assert!(
            seen.contains(&entry),
            "conf/jsipd.ini lacks ';{} = {}' in {:?}",
            key.name,
            key.default,
            key.section
        );
    }
}

#[test]
fn line_without_equals_is_rejected_on_its_line() {
    let e = only_error("[Main]\nstop_timeout 5s\n");
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("expected key = value"), "{e}");
}
