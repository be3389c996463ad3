//! The users file: who may log in, their password hashes and roles.
//!
//! A TOML file (default `<data dir>/users.toml`), one `[[user]]` table per
//! user. It is rewritten whole, atomically (temp file, fsync, rename, fsync
//! of the dir) with mode 0600: it holds password hashes. Passwords are kept
//! only as argon2id PHC strings made with the `argon2` crate's defaults.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

const MAX_NAME: usize = 64;
const MIN_PASSWORD: usize = 8;
/// In a viewer's camera list: every camera.
pub const ALL_CAMERAS: &str = "*";
const HEADER: &str = "# vigil users: change with `vigil user add` / `vigil user remove`.\n\
                      # Passwords are stored only as argon2id hashes.\n\n";

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("users file {path}: {problem}")]
    BadFile { path: PathBuf, problem: String },
    #[error("user name {0:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    BadName(String),
    #[error("password too short: use at least 8 characters")]
    ShortPassword,
    #[error("camera {0:?}: not a camera id (or \"*\" for all cameras)")]
    BadCamera(String),
    #[error("admins see every camera: a list of cameras is for viewers only")]
    AdminCameras,
    #[error("unknown role {0:?}: use admin or viewer")]
    BadRole(String),
    #[error("user {0} already exists: replace it to change it")]
    Exists(String),
    #[error("no user {0}")]
    NoSuchUser(String),
    #[error("hashing the password: {0}")]
    Hash(argon2::password_hash::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UsersError;
    fn from_str(s: &str) -> Result<Self, UsersError> {
        match s {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            _ => Err(UsersError::BadRole(s.to_string())),
        }
    }
}

/// One user as stored. No `Debug`: it holds the password hash.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    /// Viewers only: the cameras they may see; `["*"]` for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cameras: Vec<String>,
    /// argon2id, PHC string format.
    pub password_hash: String,
}

/// What `list_users` shows: everything but the hash; an admin's cameras are `["*"]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    pub cameras: Vec<String>,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default, rename = "user")]
    users: Vec<UserRecord>,
}

pub fn validate_name(name: &str) -> Result<(), UsersError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(UsersError::BadName(name.to_string())) }
}

/// Checks a camera list; an admin's may only be empty or `["*"]` (what it means anyway) and is stored empty.
fn check_cameras(role: Role, cameras: &[String]) -> Result<Vec<String>, UsersError> {
    if role == Role::Admin {
        return match cameras {
            [] => Ok(vec![]),
            [c] if c == ALL_CAMERAS => Ok(vec![]),
            _ => Err(UsersError::AdminCameras),
        };
    }
    for c in cameras {
        if c != ALL_CAMERAS && media::validate_camera_id(c).is_err() {
            return Err(UsersError::BadCamera(c.clone()));
        }
    }
    Ok(cameras.to_vec())
}

/// Hashes with argon2id and the `argon2` crate's default parameters.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(UsersError::ShortPassword);
    }
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt).map_err(UsersError::Hash)?.to_string())
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Reads and checks the users file; a missing file has no users.
pub fn load(path: &Path) -> Result<HashMap<String, UserRecord>, UsersError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => return Err(UsersError::Io { path: path.to_path_buf(), source }),
    };
    let bad = |problem: String| UsersError::BadFile { path: path.to_path_buf(), problem };
    let file: UsersFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut users = HashMap::new();
    for u in file.users {
        validate_name(&u.name).map_err(|e| bad(e.to_string()))?;
        check_cameras(u.role, &u.cameras).map_err(|e| bad(format!("user {}: {e}", u.name)))?;
        if PasswordHash::new(&u.password_hash).is_err() {
            return Err(bad(format!("user {}: password_hash is not a PHC string", u.name)));
        }
        if users.contains_key(&u.name) {
            return Err(bad(format!("user {} appears twice", u.name)));
        }
        users.insert(u.name.clone(), u);
    }
    Ok(users)
}

fn save(path: &Path, users: HashMap<String, UserRecord>) -> Result<(), UsersError> {
    let io = |source| UsersError::Io { path: path.to_path_buf(), source };
    let mut file = UsersFile { users: users.into_values().collect() };
    file.users.sort_by(|a, b| a.name.cmp(&b.name));
    let body =
        toml::to_string(&file).map_err(|e| UsersError::BadFile { path: path.to_path_buf(), problem: e.to_string() })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(io)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    // A leftover temp file may have looser permissions: start afresh so the mode applies.
    let _ = fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(HEADER.as_bytes())?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io(e)
    })
}

/// Adds a user, or changes one when `replace` is true.
pub fn add_user(
    path: &Path,
    name: &str,
    password: &str,
    role: Role,
    cameras: &[String],
    replace: bool,
) -> Result<(), UsersError> {
    validate_name(name)?;
    let cameras = check_cameras(role, cameras)?;
    let mut users = load(path)?;
    if users.contains_key(name) && !replace {
        return Err(UsersError::Exists(name.to_string()));
    }
    let password_hash = hash_password(password)?;
    let record = UserRecord { name: name.to_string(), role, cameras, password_hash };
    users.insert(name.to_string(), record);
    save(path, users)
}

pub fn remove_user(path: &Path, name: &str) -> Result<(), UsersError> {
    let mut users = load(path)?;
    if users.remove(name).is_none() {
        return Err(UsersError::NoSuchUser(name.to_string()));
    }
    save(path, users)
}

/// All users, sorted by name.
pub fn list_users(path: &Path) -> Result<Vec<UserInfo>, UsersError> {
    let info = |u: UserRecord| {
        let cameras = if u.role == Role::Admin { vec![ALL_CAMERAS.to_string()] } else { u.cameras };
        UserInfo { name: u.name, role: u.role, cameras }
    };
    let mut list: Vec<UserInfo> = load(path)?.into_values().map(info).collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}
