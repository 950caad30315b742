//! Command line: `jsipd [-p PREFIX] [-c CONF] [-t] [-s SIGNAL]`, `jsipd gencert`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lexopt::prelude::*;

use crate::app::ConfigSource;

const USAGE: &str = "\
Usage: jsipd [-p PREFIX] [-c CONF] [-t] [-s reload|reopen|quit|stop]
       jsipd gencert [-p PREFIX] [-c CONF] [--force]
       jsipd token [-p PREFIX] [-c CONF] USERID
       jsipd [-p PREFIX] [-c CONF] user add|passwd|del|list|totp …  (see below)
       jsipd --version | -h

  -p PREFIX  install tree (default: the folder above bin/)
  -c CONF    config file (default: PREFIX/conf/jsipd.ini; built-in defaults if absent)
  -t         check the config (syntax, values, TLS files) and exit
  -s SIGNAL  signal the running daemon (pid in PREFIX/logs/jsipd.pid):
             reload=HUP  reopen=USR1  quit=QUIT (graceful)  stop=TERM (at once)
  gencert    write a self-signed development certificate to the [APIServer]
             cert/key paths (certs/jsipd.crt, certs/jsipd.key); --force replaces them
  token      print the WebSocket token of USERID for [RTCServer] auth = token
             (derived from auth_secret_file, which is created when absent)
  user       the people's accounts in [RTCServer] users_file (conf/users):
{user}
             add and passwd print a new password unless --password-stdin gives one;
             totp prints the otpauth:// URI of a new one-time-code secret
";

enum Command {
    Run,
    Test,
    Signal(String),
    GenCert { force: bool },
    Token(String),
    User(Vec<std::ffi::OsString>),
    Version,
    Help,
}

struct Args {
    command: Command,
    prefix: Option<PathBuf>,
    conf: Option<PathBuf>,
}

fn parse() -> Result<Args, lexopt::Error> {
    let mut args = Args {
        command: Command::Run,
        prefix: None,
        conf: None,
    };
    let mut parser = lexopt::Parser::from_env();
    let mut force = false;
    let mut gencert = false;
    let mut token: Option<Option<String>> = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('p') | Long("prefix") => args.prefix = Some(parser.value()?.into()),
            Short('c') | Long("conf") => args.conf = Some(parser.value()?.into()),
            Short('t') | Long("test") => args.command = Command::Test,
            Short('s') | Long("signal") => {
                args.command = Command::Signal(parser.value()?.string()?)
            }
            Short('v') | Short('V') | Long("version") => args.command = Command::Version,
            Short('h') | Long("help") => args.command = Command::Help,
            Long("force") => force = true,
            Value(v) if v == "gencert" && !gencert && token.is_none() => gencert = true,
            Value(v) if v == "token" && !gencert && token.is_none() => token = Some(None),
            Value(v) if v == "user" && !gencert && token.is_none() => {
                args.command = Command::User(parser.raw_args()?.collect());
                return Ok(args);
            }
            Value(v) if matches!(token, Some(None)) => token = Some(Some(v.string()?)),
            _ => return Err(arg.unexpected()),
        }
    }
    if let Some(t) = token {
        args.command = Command::Token(t.ok_or("token needs a USERID")?);
    } else if gencert {
        args.command = Command::GenCert { force };
    } else if force {
        return Err("--force only goes with gencert".into());
    }
    Ok(args)
}

fn usage() -> String {
    USAGE.replace("{user}", crate::web::cli::USAGE)
}

/// The folder above `bin/` of this executable: `/usr/local/jsipd/bin/jsipd` → `/usr/local/jsipd`.
fn default_prefix() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.canonicalize().ok()?.parent()?.parent()?.to_owned()))
        .unwrap_or_else(|| PathBuf::from("."))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

pub fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("jsipd: {e}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let prefix = absolute(&args.prefix.unwrap_or_else(default_prefix));
    let source = ConfigSource {
        path: args
            .conf
            .as_deref()
            .map_or_else(|| prefix.join("conf/jsipd.ini"), absolute),
        explicit: args.conf.is_some(),
        prefix,
    };
    match args.command {
        Command::Help => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("jsipd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Test => test_config(&source),
        Command::Signal(name) => send_signal(&source, &name),
        Command::GenCert { force } => gencert(&source, force),
        Command::Token(userid) => token(&source, &userid),
        Command::User(args) => crate::web::cli::main(&source, args),
        Command::Run => crate::daemon::run(source),
    }
}

/// `jsipd -t`: everything start-up would check before binding ports.
fn test_config(source: &ConfigSource) -> ExitCode {
    let shown = if source.explicit || source.path.exists() {
        source.path.display().to_string()
    } else {
        format!(
            "<built-in defaults> ({} does not exist)",
            source.path.display()
        )
    };
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\njsipd: configuration {shown} test failed");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for server in [&config.api, &config.rtc_listen] {
        if server.tls_listen.is_some() {
            if let Err(e) = crate::tls::acceptor(&server.cert, &server.key, server.section) {
                eprintln!("{}: {e:#}", source.path.display());
                failed = true;
            }
        }
    }
    if let Err(e) = crate::web::People::load_users(&config) {
        eprintln!("{e:#}");
        failed = true;
    }
    if failed {
        eprintln!("jsipd: configuration {shown} test failed");
        return ExitCode::FAILURE;
    }
    println!("jsipd: configuration {shown} is ok");
    ExitCode::SUCCESS
}

fn send_signal(source: &ConfigSource, name: &str) -> ExitCode {
    let Some(sig) = crate::signals::by_name(name) else {
        eprintln!("jsipd: -s takes reload, reopen, quit or stop, not '{name}'");
        return ExitCode::from(2);
    };
    match crate::pidfile::signal(&source.pid_file(), sig) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jsipd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn gencert(source: &ConfigSource, force: bool) -> ExitCode {
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jsipd: configuration rejected:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    match crate::tls::gencert(&config.api.cert, &config.api.key, force) {
        Ok(()) => {
            println!(
                "wrote {} and {}",
                config.api.cert.display(),
                config.api.key.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jsipd: gencert: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn token(source: &ConfigSource, userid: &str) -> ExitCode {
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jsipd: configuration rejected:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    let secret = crate::api::secret_file(
        &config.rtc.auth_secret_file,
        "[RTCServer] auth_secret_file",
        "a token was asked for",
    );
    match secret {
        Ok(secret) => {
            println!("{}", crate::transport::token::issue(&secret, userid));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jsipd: token: {e:#}");
            ExitCode::FAILURE
        }
    }
}
