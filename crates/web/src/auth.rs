//! Login for the web app and the API.
//!
//! - `users`: the users file (argon2id hashes, roles, per-camera lists) and the
//!   functions `vigil user add/remove/list` call;
//! - `Auth`: sessions in memory, keyed by a random 32-byte token that works
//!   both as the `vigil_session` cookie and as an `Authorization: Bearer`
//!   token; failed-login lockout (`limiter`);
//! - `http`: the `User` and `Admin` extractors and `/api/login`, `/api/logout`,
//!   `/api/me`.
//!
//! Invariants: passwords and tokens are never logged; a session is valid only
//! while its user is in the users file with the password hash it logged in
//! with (so removing a user or changing a password ends their sessions); a
//! cookie-authenticated request that changes state carries `X-Vigil-CSRF: 1`.

mod http;
mod limiter;
mod users;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::{HeaderMap, Method};
use tokio::sync::Semaphore;

pub use http::{Admin, AuthError, User, routes};
pub use users::{
    ALL_CAMERAS, Role, UserInfo, UsersError, add_user, hash_password, list_users, remove_user, validate_name,
    verify_password,
};

use limiter::Limiter;
use users::UserRecord;

pub const COOKIE_NAME: &str = "vigil_session";
/// A header a cross-site form cannot send; cookie-authenticated requests that change state must carry it as `1`.
pub const CSRF_HEADER: &str = "x-vigil-csrf";
/// The user every request is in `--insecure-no-auth` mode.
pub const ANONYMOUS: &str = "anonymous";
/// argon2 uses ~19 MiB per verification: bound the memory and CPU that logins can take.
const CONCURRENT_VERIFIES: usize = 4;

/// `<data dir>/users.toml`.
pub fn default_users_file(data_dir: &Path) -> PathBuf {
    data_dir.join("users.toml")
}

#[derive(Clone, Debug)]
pub struct AuthOptions {
    /// Mark the cookie `Secure`: set when the server runs TLS.
    pub secure_cookie: bool,
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// Failed logins in a row that lock a user name...
    pub max_failures: u32,
    /// ...for this long.
    pub lockout: Duration,
    /// Look at the users file's mtime at most this often.
    pub reload_interval: Duration,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            secure_cookie: false,
            idle_timeout: Duration::from_secs(12 * 3600),
            max_failures: 5,
            lockout: Duration::from_secs(30),
            reload_interval: Duration::from_secs(1),
        }
    }
}

pub struct Auth {
    /// `None`: `--insecure-no-auth`.
    users_file: Option<PathBuf>,
    opts: AuthOptions,
    state: Mutex<State>,
    verifying: Semaphore,
}

/// Shows no tokens.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state();
        f.debug_struct("Auth")
            .field("users_file", &self.users_file)
            .field("users", &s.users.len())
            .field("sessions", &s.sessions.len())
            .finish_non_exhaustive()
    }
}

struct State {
    users: HashMap<String, UserRecord>,
    stamp: Option<Stamp>,
    last_check: Instant,
    sessions: HashMap<String, Session>,
    limiter: Limiter,
}

struct Session {
    user: String,
    password_hash: String,
    last_seen: Instant,
}

/// What tells that the users file changed: it is replaced by rename, so the inode changes too.
#[derive(PartialEq, Eq)]
struct Stamp(u64, u64, i64, i64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp(m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
}

impl Auth {
    /// Reads the users file (a missing one has no users: see `user_count`).
    pub fn new(users_file: impl Into<PathBuf>, opts: AuthOptions) -> Result<Auth, UsersError> {
        let path = users_file.into();
        let stamp = stamp(&path);
        let users = users::load(&path)?;
        // Made ahead so that the first login of an unknown user takes no longer than the next.
        std::thread::spawn(dummy_hash);
        Ok(Auth::build(Some(path), opts, users, stamp))
    }

    /// `--insecure-no-auth`: every request is the admin `anonymous`.
    pub fn disabled() -> Auth {
        Auth::build(None, AuthOptions::default(), HashMap::new(), None)
    }

    fn build(
        users_file: Option<PathBuf>,
        opts: AuthOptions,
        users: HashMap<String, UserRecord>,
        stamp: Option<Stamp>,
    ) -> Auth {
        let state = State {
            users,
            stamp,
            last_check: Instant::now(),
            sessions: HashMap::new(),
            limiter: Limiter::new(opts.max_failures, opts.lockout),
        };
        Auth { users_file, opts, state: Mutex::new(state), verifying: Semaphore::new(CONCURRENT_VERIFIES) }
    }

    pub fn is_disabled(&self) -> bool {
        self.users_file.is_none()
    }

    /// Users in the file as last read (0: nobody can log in yet).
    pub fn user_count(&self) -> usize {
        self.state().users.len()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every unlock, so a panic elsewhere need not stop logins.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reload_if_due(&self) {
        let Some(path) = &self.users_file else { return };
        {
            let mut s = self.state();
            if s.last_check.elapsed() < self.opts.reload_interval {
                return;
            }
            s.last_check = Instant::now();
        }
        let new_stamp = stamp(path);
        if new_stamp == self.state().stamp {
            return;
        }
        let loaded = users::load(path);
        let mut s = self.state();
        s.stamp = new_stamp;
        match loaded {
            Ok(users) => {
                tracing::info!(path = %path.display(), users = users.len(), "users file reloaded");
                s.users = users;
            }
            Err(e) => tracing::warn!("{e}; keeping the users read before"),
        }
    }

    /// Checks a password; on success starts a session and returns its token.
    /// In disabled mode: the anonymous admin and an empty token.
    pub async fn login(&self, name: &str, password: &str) -> Result<(String, User), AuthError> {
        if self.is_disabled() {
            return Ok((String::new(), User::anonymous()));
        }
        self.reload_if_due();
        let stored = {
            let s = self.state();
            if let Some(wait) = s.limiter.locked_for(name, Instant::now()) {
                return Err(AuthError::Locked(wait));
            }
            s.users.get(name).map(|u| u.password_hash.clone())
        };
        let ok = {
            let _permit = self.verifying.acquire().await.map_err(|_| AuthError::Internal)?;
            let (password, hash) = (password.to_string(), stored.clone());
            tokio::task::spawn_blocking(move || match hash {
                Some(hash) => verify_password(&password, &hash),
                // Same work for an unknown user, so the time taken does not tell who exists.
                None => {
                    verify_password(&password, dummy_hash());
                    false
                }
            })
            .await
            .map_err(|_| AuthError::Internal)?
        };
        let now = Instant::now();
        let mut s = self.state();
        // Checked again after verifying: once locked, every answer is the same, right password or not.
        if let Some(wait) = s.limiter.locked_for(name, now) {
            return Err(AuthError::Locked(wait));
        }
        // The file may have changed while verifying: only the hash that was checked logs in.
        let record = s.users.get(name).filter(|u| ok && Some(&u.password_hash) == stored.as_ref()).cloned();
        let Some(record) = record else {
            // Only names that could exist are tracked: no one logs in with the others, and they would fill memory.
            if validate_name(name).is_ok() {
                s.limiter.failed(name, now);
            }
            return Err(AuthError::WrongPassword);
        };
        s.limiter.succeeded(name);
        let token = new_token()?;
        let idle = self.opts.idle_timeout;
        s.sessions.retain(|_, v| now.saturating_duration_since(v.last_seen) < idle);
        s.sessions.insert(
            token.clone(),
            Session { user: record.name.clone(), password_hash: record.password_hash.clone(), last_seen: now },
        );
        Ok((token, User::from_record(&record)))
    }

    /// The user a request is from, by bearer token or session cookie.
    pub fn authenticate(&self, method: &Method, headers: &HeaderMap) -> Result<User, AuthError> {
        let csrf_ok = method.is_safe() || headers.get(CSRF_HEADER).is_some_and(|v| v == "1");
        if self.is_disabled() {
            // Nothing authenticates these requests, so any site the browser visits
            // could post to us: the header is required from everyone.
            return if csrf_ok { Ok(User::anonymous()) } else { Err(AuthError::Csrf) };
        }
        let (token, by_cookie) = credential(headers).ok_or(AuthError::LoginRequired)?;
        self.reload_if_due();
        let user = self.session_user(token)?;
        // Browsers attach cookies to cross-site requests by themselves, never bearer tokens.
        if by_cookie && !csrf_ok {
            return Err(AuthError::Csrf);
        }
        Ok(user)
    }

    fn session_user(&self, token: &str) -> Result<User, AuthError> {
        let now = Instant::now();
        let mut guard = self.state();
        let s = &mut *guard;
        let Some(session) = s.sessions.get_mut(token) else { return Err(AuthError::LoginRequired) };
        let fresh = now.saturating_duration_since(session.last_seen) < self.opts.idle_timeout;
        match s.users.get(&session.user) {
            Some(u) if fresh && u.password_hash == session.password_hash => {
                session.last_seen = now;
                Ok(User::from_record(u))
            }
            _ => {
                s.sessions.remove(token);
                Err(AuthError::LoginRequired)
            }
        }
    }

    /// Ends the session of the request's token, if any.
    pub fn logout(&self, headers: &HeaderMap) {
        if let Some((token, _)) = credential(headers) {
            self.state().sessions.remove(token);
        }
    }

    /// The `Set-Cookie` value for a session; an empty token clears the cookie.
    fn cookie(&self, token: &str) -> String {
        let secure = if self.opts.secure_cookie { "; Secure" } else { "" };
        let clear = if token.is_empty() { "; Max-Age=0" } else { "" };
        format!("{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/{secure}{clear}")
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    // Only fails if the OS has no randomness; an empty hash then just verifies faster.
    DUMMY.get_or_init(|| hash_password("not anyone's password").unwrap_or_default())
}

fn new_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    OsRng.try_fill_bytes(&mut bytes).map_err(|_| AuthError::Internal)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token and whether it came from the cookie. A non-bearer `Authorization`
/// (say, basic auth added by a proxy) is left alone and the cookie used.
fn credential(headers: &HeaderMap) -> Option<(&str, bool)> {
    let bearer = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    if let Some(token) = bearer {
        return Some((token, false));
    }
    let cookie = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)?;
    Some((cookie.1, true))
}
