//! The people's accounts: `conf/users`, one line per user.
//!
//! ```text
//! # name  role      argon2id hash (PHC string)                        [totp=BASE32]
//! alice   operator  $argon2id$v=19$m=19456,t=2,p=1$…$…                totp=JBSWY3DP…
//! ```
//!
//! A text file, like htpasswd, so an administrator can read it, diff it and delete a
//! line by hand; it is written only by `jsipd user …`, whole, through a temporary file
//! and a rename, with mode 0600, because the hashes are worth guarding even though they
//! are slow to attack. The daemon refuses a file others may read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use jsipd_plugin_api::api::Role;

/// OWASP's first recommended argon2id setting (19 MiB, 2 passes, 1 lane): tens of
/// milliseconds per sign-in here, and each guess costs an attacker as much.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const PASSES: u32 = 2;
pub const LANES: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// The PHC string (`$argon2id$…`).
    pub hash: String,
    /// The TOTP secret (raw bytes), when the user has one.
    pub totp: Option<Vec<u8>>,
}

/// Every account, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    by_name: BTreeMap<String, Arc<User>>,
}

impl Users {
    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<User>> {
        self.by_name.values()
    }

    pub fn insert(&mut self, user: User) {
        self.by_name.insert(user.name.clone(), Arc::new(user));
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<User>> {
        self.by_name.remove(name)
    }

    /// Reads `path`; a missing file is no users. Refuses a file that others than its
    /// owner may read or write.
    pub fn load(path: &Path) -> Result<Users, String> {
        let shown = path.display();
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Users::default()),
            Err(e) => return Err(format!("{shown}: {e}")),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown} is mode {mode:04o}, but it holds password hashes: only its owner may read it (chmod 600 {shown})"
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        Users::parse(&text).map_err(|(line, e)| format!("{shown}:{line}: {e}"))
    }

    /// The file's text; `Err((line, reason))` on the first bad line.
    pub fn parse(text: &str) -> Result<Users, (usize, String)> {
        let mut users = Users::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let user = parse_line(line).map_err(|e| (i + 1, e))?;
            if users.by_name.contains_key(&user.name) {
                return Err((i + 1, format!("user {} appears twice", user.name)));
            }
            users.insert(user);
        }
        Ok(users)
    }

    pub fn to_text(&self) -> String {
        let mut out = String::from(
            "# jsipd's people's accounts, written by `jsipd user`: name role argon2id-hash [totp=SECRET]\n",
        );
        for u in self.by_name.values() {
            let _ = write!(out, "{} {} {}", u.name, u.role, u.hash);
            if let Some(secret) = &u.totp {
                let _ = write!(out, " totp={}", data_encoding::BASE32_NOPAD.encode(secret));
            }
            out.push('\n');
        }
        out
    }

    /// Writes the whole file: a temporary file of mode 0600 in the same folder, then a
    /// rename, so a reader sees the old file or the new one, never half of one. Run as
    /// root (a package's `sudo jsipd user add`), the file is given to the owner of its
    /// folder, the daemon's user, which must read it.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let shown = path.display();
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(self.to_text().as_bytes())?;
            f.sync_all()?;
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                let owner = std::fs::metadata(dir)?;
                std::os::unix::fs::chown(&tmp, Some(owner.uid()), Some(owner.gid()))?;
            }
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{shown}: {e}")
        })
    }
}

fn parse_line(line: &str) -> Result<User, String> {
    let mut fields = line.split_whitespace();
    let (Some(name), Some(role), Some(hash)) = (fields.next(), fields.next(), fields.next()) else {
        return Err("expected NAME ROLE HASH [totp=SECRET]".into());
    };
    check_name(name)?;
    let role = Role::parse(role)
        .ok_or_else(|| format!("'{role}' is not a role (viewer, operator, admin)"))?;
    PasswordHash::new(hash).map_err(|e| format!("the hash of {name} is not a PHC string: {e}"))?;
    let mut totp = None;
    for extra in fields {
        match extra.strip_prefix("totp=") {
            Some(secret) => {
                let bytes = data_encoding::BASE32_NOPAD
                    .decode(secret.as_bytes())
                    .map_err(|e| format!("the TOTP secret of {name} is not base32: {e}"))?;
                totp = Some(bytes);
            }
            None => return Err(format!("unknown field '{extra}'")),
        }
    }
    Ok(User {
        name: name.into(),
        role,
        hash: hash.into(),
        totp,
    })
}

/// Letters, digits, `.`, `_` and `-`, at most 32, starting with a letter or digit. No
/// `~` (the separator of JSIP names `USER~TAB`), `@` or `:` (JSIP URIs).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a user name: 1 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit"
        ))
    }
}

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A new PHC string for `password`, with a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `hash` (with the parameters written in it,
/// so a file from before a parameter change still works). Slow on purpose.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| hasher().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash to verify against when the user does not exist, so a wrong name takes as long
/// as a wrong password and sign-in timing does not tell which names exist.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy").unwrap_or_default())
}

/// A password `jsipd user add` prints when none is given: 16 characters from a 56-letter
/// alphabet without look-alikes (about 93 bits).
pub fn generate_password() -> Result<String, String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::new();
    while out.len() < 16 {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
        // Rejection sampling: no bias toward the first letters.
        for &x in &b {
            let limit = 256 - 256 % ALPHABET.len();
            if (x as usize) < limit && out.len() < 16 {
                out.push(ALPHABET[x as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct hors", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn the_file_round_trips_and_bad_lines_name_their_number() {
        let mut users = Users::default();
        users.insert(User {
            name: "alice".into(),
            role: Role::Operator,
            hash: hash_password("pw").unwrap(),
            totp: Some(vec![1, 2, 3, 4, 5]),
        });
        users.insert(User {
            name: "bob".into(),
            role: Role::Viewer,
            hash: users.get("alice").unwrap().hash.clone(),
            totp: None,
        });
        let text = users.to_text();
        assert_eq!(Users::parse(&text).unwrap(), users);

        let bad = format!("{text}carol superuser {}\n", users.get("bob").unwrap().hash);
        let (line, e) = Users::parse(&bad).unwrap_err();
        assert_eq!(line, 4);
        assert!(e.contains("'superuser' is not a role"), "{e}");
        assert!(Users::parse("alice admin nothash")
            .unwrap_err()
            .1
            .contains("PHC"));
        let twice = format!("{text}{}", text.lines().nth(1).unwrap());
        assert!(Users::parse(&twice).unwrap_err().1.contains("twice"));
    }

    #[test]
    fn names_that_would_clash_with_jsip_names_are_refused() {
        for bad in ["", "a~b", "a@b", "a:b", "-x", ".x", &"x".repeat(33), "ä"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in ["alice", "a.b-c_d", "0x", &"x".repeat(32)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_file_others_can_read_is_refused_and_saving_makes_it_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        assert!(Users::load(&path).unwrap().is_empty(), "missing = no users");
        let mut users = Users::default();
        users.insert(User {
            name: "alice".into(),
            role: Role::Admin,
            hash: hash_password("pw").unwrap(),
            totp: None,
        });
        users.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Users::load(&path).unwrap(), users);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Users::load(&path).unwrap_err();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
