//! `jsipd user add|passwd|del|list|totp`: the accounts of the people's port.
//!
//! They edit `[RTCServer] users_file` and nothing else; the running daemon reads the file
//! on SIGHUP (`jsipd -s reload`), which also ends the sessions of changed users.

use std::ffi::OsString;
use std::io::BufRead as _;
use std::process::ExitCode;

use jsipd_plugin_api::api::Role;
use lexopt::prelude::*;

use super::totp;
use super::users::{self, User, Users};
use crate::app::ConfigSource;

pub const USAGE: &str = "\
       jsipd user add NAME [--role viewer|operator|admin] [--password-stdin]
       jsipd user passwd NAME [--password-stdin]
       jsipd user del NAME
       jsipd user list
       jsipd user totp NAME [--off]";

const MIN_PASSWORD: usize = 8;

enum Action {
    Add { role: Role },
    Passwd,
    Del,
    List,
    Totp { off: bool },
}

struct Args {
    action: Action,
    name: Option<String>,
    stdin: bool,
}

fn parse(args: Vec<OsString>) -> Result<Args, lexopt::Error> {
    let mut parser = lexopt::Parser::from_args(args);
    let verb = match parser.next()? {
        Some(Value(v)) => v.string()?,
        _ => return Err("user needs one of add, passwd, del, list, totp".into()),
    };
    let mut role = Role::Operator;
    let (mut name, mut stdin, mut off) = (None, false, false);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("role") => {
                let r = parser.value()?.string()?;
                role = Role::parse(&r)
                    .ok_or_else(|| format!("'{r}' is not a role (viewer, operator, admin)"))?;
            }
            Long("password-stdin") => stdin = true,
            Long("off") if verb == "totp" => off = true,
            Value(v) if name.is_none() => name = Some(v.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    let action = match verb.as_str() {
        "add" => Action::Add { role },
        "passwd" => Action::Passwd,
        "del" => Action::Del,
        "list" => Action::List,
        "totp" => Action::Totp { off },
        other => {
            return Err(
                format!("'{other}' is not a user command (add, passwd, del, list, totp)").into(),
            )
        }
    };
    if name.is_none() && !matches!(action, Action::List) {
        return Err(format!("user {verb} needs a NAME").into());
    }
    Ok(Args {
        action,
        name,
        stdin,
    })
}

pub fn main(source: &ConfigSource, args: Vec<OsString>) -> ExitCode {
    let args = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("jsipd: {e}\n\nUsage:\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(source, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jsipd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(source: &ConfigSource, args: Args) -> Result<(), String> {
    let config = source
        .load()
        .map_err(|e| format!("configuration rejected:\n{e}"))?;
    let path = &config.rtc.users_file;
    let mut all = Users::load(path)?;
    let name = args.name.unwrap_or_default();
    let applied = "The running daemon applies it on SIGHUP: jsipd -s reload";
    match args.action {
        Action::List => {
            if all.is_empty() {
                println!(
                    "no users in {}; add one with: jsipd user add NAME --role admin",
                    path.display()
                );
            }
            for u in all.iter() {
                let totp = if u.totp.is_some() { "totp" } else { "" };
                println!("{:<32} {:<8} {totp}", u.name, u.role.as_str());
            }
            return Ok(());
        }
        Action::Add { role } => {
            users::check_name(&name)?;
            if all.get(&name).is_some() {
                return Err(format!(
                    "user {name} exists; change it with jsipd user passwd {name}, or del it first"
                ));
            }
            let (password, generated) = password(args.stdin)?;
            all.insert(User {
                name: name.clone(),
                role,
                hash: users::hash_password(&password)?,
                totp: None,
            });
            all.save(path)?;
            println!("added {name} ({role}) to {}", path.display());
            if generated {
                println!("password: {password}");
            }
        }
        Action::Passwd => {
            let user = existing(&all, &name, path)?;
            let (password, generated) = password(args.stdin)?;
            all.insert(User {
                hash: users::hash_password(&password)?,
                ..user
            });
            all.save(path)?;
            println!("changed the password of {name}; its sessions end");
            if generated {
                println!("password: {password}");
            }
        }
        Action::Del => {
            existing(&all, &name, path)?;
            all.remove(&name);
            all.save(path)?;
            println!("deleted {name}; its sessions end");
        }
        Action::Totp { off } => {
            let user = existing(&all, &name, path)?;
            if off {
                all.insert(User { totp: None, ..user });
                all.save(path)?;
                println!("{name} signs in without a one-time code");
            } else {
                let mut secret = vec![0u8; 20];
                getrandom::fill(&mut secret).map_err(|e| format!("no randomness: {e}"))?;
                println!("{}", totp::uri(&name, &secret));
                all.insert(User {
                    totp: Some(secret),
                    ..user
                });
                all.save(path)?;
                eprintln!("scan it into an authenticator app; {name} now signs in with its code");
            }
        }
    }
    eprintln!("{applied}");
    Ok(())
}

fn existing(all: &Users, name: &str, path: &std::path::Path) -> Result<User, String> {
    all.get(name)
        .map(|u| (**u).clone())
        .ok_or_else(|| format!("no user {name} in {}", path.display()))
}

/// The password from stdin's first line, or a new one (`true`: print it).
fn password(stdin: bool) -> Result<(String, bool), String> {
    if !stdin {
        return Ok((users::generate_password()?, true));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password from stdin: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!(
            "the password must have at least {MIN_PASSWORD} characters"
        ));
    }
    Ok((password, false))
}
