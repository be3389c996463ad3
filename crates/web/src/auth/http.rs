//! The HTTP side of login: extractors, errors as JSON, and the login routes.
//!
//! `POST /api/login` needs no CSRF header: it only accepts
//! `Content-Type: application/json`, which a cross-site form cannot send.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::header::{RETRY_AFTER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::users::{ALL_CAMERAS, Role, UserRecord};
use super::{ANONYMOUS, Auth};

/// Why a request was refused; answers `{"error": "..."}` with the status.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("login required")]
    LoginRequired,
    #[error("wrong user or password")]
    WrongPassword,
    #[error("too many failed logins: try again in {} s", .0.as_secs() + 1)]
    Locked(Duration),
    #[error("missing header X-Vigil-CSRF: 1 (needed with cookie login for requests that change state)")]
    Csrf,
    #[error("admins only")]
    NotAdmin,
    #[error("no permission for camera {0}")]
    NoCamera(String),
    #[error("expected a JSON body {{\"user\": ..., \"password\": ...}}")]
    BadLogin,
    #[error("internal error")]
    Internal,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = match self {
            AuthError::LoginRequired | AuthError::WrongPassword => StatusCode::UNAUTHORIZED,
            AuthError::Locked(_) => StatusCode::TOO_MANY_REQUESTS,
            AuthError::Csrf | AuthError::NotAdmin | AuthError::NoCamera(_) => StatusCode::FORBIDDEN,
            AuthError::BadLogin => StatusCode::BAD_REQUEST,
            AuthError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut res = (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response();
        if let AuthError::Locked(wait) = self {
            res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(wait.as_secs() + 1));
        }
        res
    }
}

/// The logged-in user of a request. As a handler argument it refuses
/// requests without a valid session or token (401), and cookie requests that
/// change state without the CSRF header (403).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    #[serde(rename = "user")]
    pub name: String,
    pub role: Role,
    /// The cameras this user may see; `["*"]` for all (always for admins).
    pub cameras: Vec<String>,
}

impl User {
    pub(super) fn from_record(u: &UserRecord) -> User {
        let cameras = match u.role {
            Role::Admin => vec![ALL_CAMERAS.to_string()],
            Role::Viewer => u.cameras.clone(),
        };
        User { name: u.name.clone(), role: u.role, cameras }
    }

    pub(super) fn anonymous() -> User {
        User { name: ANONYMOUS.to_string(), role: Role::Admin, cameras: vec![ALL_CAMERAS.to_string()] }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn may_view(&self, camera: &str) -> bool {
        self.is_admin() || self.cameras.iter().any(|c| c == ALL_CAMERAS || c == camera)
    }

    /// `Err` answers 403 `{"error": "no permission for camera X"}`.
    pub fn check_camera(&self, camera: &str) -> Result<(), AuthError> {
        if self.may_view(camera) { Ok(()) } else { Err(AuthError::NoCamera(camera.to_string())) }
    }
}

impl<S> FromRequestParts<S> for User
where
    Arc<Auth>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AuthError> {
        Arc::<Auth>::from_ref(state).authenticate(&parts.method, &parts.headers)
    }
}

/// A logged-in admin; viewers get 403.
#[derive(Clone, Debug)]
pub struct Admin(pub User);

impl<S> FromRequestParts<S> for Admin
where
    Arc<Auth>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AuthError> {
        let user = User::from_request_parts(parts, state).await?;
        if user.is_admin() { Ok(Admin(user)) } else { Err(AuthError::NotAdmin) }
    }
}

/// `/api/login`, `/api/logout`, `/api/me`, for any state that holds an `Arc<Auth>`.
pub fn routes<S>() -> Router<S>
where
    Arc<Auth>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new().route("/api/login", post(login)).route("/api/logout", post(logout)).route("/api/me", get(me))
}

/// No `Debug`: it holds a password.
#[derive(Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

#[derive(Serialize)]
struct LoginReply<'a> {
    token: &'a str,
    #[serde(flatten)]
    user: &'a User,
}

async fn login(
    State(auth): State<Arc<Auth>>,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Response, AuthError> {
    let Json(body) = body.map_err(|_| AuthError::BadLogin)?;
    let (token, user) = auth.login(&body.user, &body.password).await?;
    let mut res = Json(LoginReply { token: &token, user: &user }).into_response();
    if !token.is_empty() {
        let cookie = HeaderValue::try_from(auth.cookie(&token)).map_err(|_| AuthError::Internal)?;
        res.headers_mut().insert(SET_COOKIE, cookie);
    }
    Ok(res)
}

/// Ends the request's session and clears the cookie; already logged out is fine.
async fn logout(State(auth): State<Arc<Auth>>, method: Method, headers: HeaderMap) -> Result<Response, AuthError> {
    match auth.authenticate(&method, &headers) {
        Ok(_) | Err(AuthError::LoginRequired) => {}
        Err(e) => return Err(e),
    }
    auth.logout(&headers);
    let clear = HeaderValue::try_from(auth.cookie("")).map_err(|_| AuthError::Internal)?;
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, clear)]).into_response())
}

async fn me(user: User) -> Json<User> {
    Json(user)
}
