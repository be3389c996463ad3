//! Camera credentials, shared by the network sources (`rtsp`, `http`): taken
//! out of the source URL at parse time, else read from the environment at
//! each connect, and kept out of every log.
//!
//! Environment, for a source kind `PREFIX` (`VIGIL_RTSP`, `VIGIL_HTTP`):
//! `PREFIX_USER_<CAMERA>` / `PREFIX_PASSWORD_<CAMERA>` (the camera id
//! upper-cased with every other character than `A-Z0-9` as `_`), else
//! `PREFIX_USER` / `PREFIX_PASSWORD`. The user and the password are looked up
//! apart: a URL may carry the user and leave the password to the
//! environment. An empty variable gives nothing, and an empty per-camera one
//! hides the shared one (a camera without a password among cameras with).

/// A user and a password; `Debug` redacts the password.
#[derive(Clone, PartialEq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// Takes the (percent-decoded) user and password out of `url`, so that what
/// is left is safe to show.
pub fn take_from_url(url: &mut url::Url) -> (Option<String>, Option<String>) {
    let decode = |v: &str| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
    let user = Some(decode(url.username())).filter(|u| !u.is_empty());
    let password = url.password().map(decode);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    (user, password)
}

/// The credentials for `camera`: the URL's (`user`, `password`), else the
/// environment's as `var` reads it (`std::env::var` outside tests); `None`
/// when neither gives a user or a password.
pub fn lookup(
    prefix: &str,
    camera: &str,
    user: Option<&str>,
    password: Option<&str>,
    var: impl Fn(&str) -> Option<String>,
) -> Option<Credentials> {
    let suffix: String =
        camera.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    let env = |name: &str| var(&format!("{name}_{suffix}")).or_else(|| var(name)).filter(|v| !v.is_empty());
    let user = user.map(str::to_string).or_else(|| env(&format!("{prefix}_USER")));
    let password = password.map(str::to_string).or_else(|| env(&format!("{prefix}_PASSWORD")));
    (user.is_some() || password.is_some())
        .then(|| Credentials { user: user.unwrap_or_default(), password: password.unwrap_or_default() })
}

/// The process environment, for `lookup`.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `text` with the password (if any) replaced by `<redacted>`.
pub fn redact(text: &str, creds: Option<&Credentials>) -> String {
    match creds.map(|c| c.password.as_str()).filter(|p| !p.is_empty()) {
        Some(p) => text.replace(p, "<redacted>"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_first_then_the_camera_then_everyone() {
        let env = |name: &str| match name {
            "VIGIL_X_USER_CAM_ENV_1" => Some("viewer".to_string()),
            "VIGIL_X_PASSWORD_CAM_ENV_1" => Some("pw".to_string()),
            "VIGIL_X_USER" => Some("everyone".to_string()),
            "VIGIL_X_PASSWORD" => Some("shared".to_string()),
            "VIGIL_X_PASSWORD_BLANK" => Some(String::new()),
            _ => None,
        };
        let get = |camera, user, password| lookup("VIGIL_X", camera, user, password, env).map(|c| (c.user, c.password));
        let pair = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
        assert_eq!(get("cam-env.1", None, None), pair("viewer", "pw"));
        assert_eq!(get("door", None, None), pair("everyone", "shared"));
        assert_eq!(get("blank", None, None), pair("everyone", ""), "an empty one hides the shared one");
        assert_eq!(get("cam-env.1", Some("me"), Some("mine")), pair("me", "mine"));
        assert_eq!(get("cam-env.1", Some("me"), None), pair("me", "pw"));
        assert_eq!(lookup("VIGIL_X", "door", None, None, |_| None), None);
    }

    #[test]
    fn urls_lose_their_credentials_and_logs_never_see_them() {
        let mut url = url::Url::parse("http://admin:s%40cret@cam:81/x").unwrap();
        assert_eq!(take_from_url(&mut url), (Some("admin".into()), Some("s@cret".into())));
        assert_eq!(url.as_str(), "http://cam:81/x");
        let c = Credentials { user: "admin".into(), password: "s@cret".into() };
        assert!(!format!("{c:?}").contains("cret"));
        assert_eq!(redact("refused s@cret twice: s@cret", Some(&c)), "refused <redacted> twice: <redacted>");
        assert_eq!(redact("as is", None), "as is");
    }
}
