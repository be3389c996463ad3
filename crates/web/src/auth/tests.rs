use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path as UrlPath;
use axum::http::{Request, StatusCode, header};
use axum::routing::{any, get};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;

const PW: &str = "correct horse";

/// A fresh dir and users file path for one test.
fn users_file(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-auth-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    default_users_file(&dir)
}

fn cams(list: &[&str]) -> Vec<String> {
    list.iter().map(|c| c.to_string()).collect()
}

/// alice: admin; bob: viewer of cam1.
fn two_users(test: &str) -> PathBuf {
    let path = users_file(test);
    add_user(&path, "alice", PW, Role::Admin, &[], false).unwrap();
    add_user(&path, "bob", PW, Role::Viewer, &cams(&["cam1"]), false).unwrap();
    path
}

fn fast() -> AuthOptions {
    AuthOptions { reload_interval: Duration::ZERO, ..AuthOptions::default() }
}

/// The auth routes plus a few protected ones, as the server would mount them.
fn app(auth: Arc<Auth>) -> Router {
    routes()
        .route("/api/change", any(|u: User| async move { u.name }))
        .route(
            "/api/cameras/{id}",
            get(|u: User, UrlPath(id): UrlPath<String>| async move { u.check_camera(&id).map(|_| id) }),
        )
        .route("/api/admin", get(|Admin(u): Admin| async move { u.name }))
        .with_state(auth)
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply { status, headers, body }
}

async fn login(app: &Router, user: &str, password: &str) -> Reply {
    let body = json!({ "user": user, "password": password }).to_string();
    let req = Request::post("/api/login").header(header::CONTENT_TYPE, "application/json").body(Body::from(body));
    send(app, req.unwrap()).await
}

/// Logs in and returns the token.
async fn token(app: &Router, user: &str) -> String {
    let r = login(app, user, PW).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["token"].as_str().unwrap().to_string()
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

#[test]
fn add_remove_list_users() {
    let path = two_users("crud");
    let list = list_users(&path).unwrap();
    let names: Vec<_> = list.iter().map(|u| (u.name.as_str(), u.role, u.cameras.clone())).collect();
    assert_eq!(names, [("alice", Role::Admin, cams(&["*"])), ("bob", Role::Viewer, cams(&["cam1"]))]);

    let again = add_user(&path, "bob", PW, Role::Viewer, &[], false);
    assert!(matches!(again, Err(UsersError::Exists(_))), "{again:?}");
    add_user(&path, "bob", PW, Role::Viewer, &cams(&["*"]), true).unwrap();
    assert_eq!(list_users(&path).unwrap()[1].cameras, ["*"]);

    remove_user(&path, "bob").unwrap();
    assert!(matches!(remove_user(&path, "bob"), Err(UsersError::NoSuchUser(_))));
    assert_eq!(list_users(&path).unwrap().len(), 1);
}

#[test]
fn bad_input_is_refused() {
    let path = users_file("bad-input");
    let long = "a".repeat(65);
    let cases: &[(&str, &str, Role, &[&str], &str)] = &[
        ("", PW, Role::Admin, &[], "user name"),
        ("a b", PW, Role::Admin, &[], "user name"),
        ("é", PW, Role::Admin, &[], "user name"),
        (&long, PW, Role::Admin, &[], "user name"),
        ("carol", "short", Role::Admin, &[], "at least 8"),
        ("carol", PW, Role::Admin, &["cam1"], "viewers only"),
        ("carol", PW, Role::Viewer, &["cam 1"], "camera"),
    ];
    for (name, pw, role, cameras, want) in cases {
        let err = add_user(&path, name, pw, *role, &cams(cameras), false).unwrap_err().to_string();
        assert!(err.contains(want), "{name:?}: {err}");
    }
    add_user(&path, &"a".repeat(64), PW, Role::Viewer, &cams(&["cam-1.x_2", "*"]), false).unwrap();
    // `*` is what an admin sees anyway (the CLI's default): accepted, not stored.
    add_user(&path, "root", PW, Role::Admin, &cams(&["*"]), false).unwrap();
    assert!(!std::fs::read_to_string(&path).unwrap().contains("cameras = [\"*\"]"));
    assert_eq!("viewer".parse::<Role>().unwrap(), Role::Viewer);
    assert!("root".parse::<Role>().unwrap_err().to_string().contains("admin or viewer"));
}

#[test]
fn file_is_0600_and_holds_no_password() {
    let path = two_users("mode");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(PW));
    assert!(text.contains("$argon2id$"), "{text}");
    // No temp file left behind.
    assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn hash_and_verify() {
    let h = hash_password(PW).unwrap();
    assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
    assert!(verify_password(PW, &h));
    assert!(!verify_password("wrong password", &h));
    assert!(!verify_password(PW, "not a hash"));
}

#[test]
fn corrupt_file_names_file_and_problem() {
    let path = users_file("corrupt");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let hash = hash_password(PW).unwrap();
    let cases = [
        ("[[user]\n".to_string(), "TOML"),
        (format!("[[user]]\nname = \"a\"\nrole = \"admin\"\npassword_hash = \"{hash}\"\nextra = 1\n"), "extra"),
        ("[[user]]\nname = \"a\"\nrole = \"admin\"\npassword_hash = \"secret\"\n".to_string(), "PHC"),
        ("[[user]]\nname = \"a\"\nrole = \"root\"\npassword_hash = \"x\"\n".to_string(), "root"),
        (format!("[[user]]\nname = \"a b\"\nrole = \"admin\"\npassword_hash = \"{hash}\"\n"), "a b"),
        (format!("[[user]]\nname=\"a\"\nrole=\"admin\"\npassword_hash=\"{hash}\"\n").repeat(2), "twice"),
    ];
    for (text, want) in cases {
        std::fs::write(&path, &text).unwrap();
        let err = list_users(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains(want), "{text}: {err}");
        assert!(Auth::new(&path, fast()).is_err());
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let app = app(Arc::new(Auth::new(two_users("wrong"), fast()).unwrap()));
    let wrong = login(&app, "alice", "not the password").await;
    let unknown = login(&app, "mallory", PW).await;
    for r in [&wrong, &unknown] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.body, json!({ "error": "wrong user or password" }));
        assert!(r.headers.get(header::SET_COOKIE).is_none());
    }
    let req = Request::post("/api/login").header(header::CONTENT_TYPE, "text/plain").body(Body::from("user=a"));
    assert_eq!(send(&app, req.unwrap()).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn lockout_after_failures() {
    let opts = AuthOptions { max_failures: 3, lockout: Duration::from_secs(1), ..fast() };
    let app = app(Arc::new(Auth::new(two_users("lockout"), opts).unwrap()));
    for _ in 0..3 {
        assert_eq!(login(&app, "alice", "guess guess").await.status, StatusCode::UNAUTHORIZED);
    }
    let locked = login(&app, "alice", PW).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.body["error"].as_str().unwrap().starts_with("too many failed logins"));
    assert!(locked.headers.contains_key(header::RETRY_AFTER));
    // Another name is not locked; the locked one opens again after the lockout.
    assert_eq!(login(&app, "bob", PW).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(login(&app, "alice", PW).await.status, StatusCode::OK);
}

#[tokio::test]
async fn bearer_token() {
    let app = app(Arc::new(Auth::new(two_users("bearer"), fast()).unwrap()));
    let r = login(&app, "bob", PW).await;
    assert_eq!(r.body["user"], "bob");
    assert_eq!(r.body["role"], "viewer");
    assert_eq!(r.body["cameras"], json!(["cam1"]));
    let token = r.body["token"].as_str().unwrap();
    assert_eq!(token.len(), 64);

    let (k, v) = bearer(token);
    let me = send(&app, req("GET", "/api/me", &[(k, &v)])).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body, json!({ "user": "bob", "role": "viewer", "cameras": ["cam1"] }));
    // Bearer requests need no CSRF header.
    assert_eq!(send(&app, req("POST", "/api/change", &[(k, &v)])).await.status, StatusCode::OK);

    let none = send(&app, req("GET", "/api/me", &[])).await;
    assert_eq!((none.status, none.body), (StatusCode::UNAUTHORIZED, json!({ "error": "login required" })));
    let (k, v) = bearer("00ff");
    assert_eq!(send(&app, req("GET", "/api/me", &[(k, &v)])).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn cookie_and_csrf() {
    let app = app(Arc::new(Auth::new(two_users("cookie"), fast()).unwrap()));
    let r = login(&app, "alice", PW).await;
    let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    let token = r.body["token"].as_str().unwrap();
    assert_eq!(set, format!("vigil_session={token}; HttpOnly; SameSite=Strict; Path=/"));

    let cookie = format!("theme=dark; vigil_session={token}");
    let c = ("cookie", cookie.as_str());
    let me = send(&app, req("GET", "/api/me", &[c])).await;
    assert_eq!(me.body, json!({ "user": "alice", "role": "admin", "cameras": ["*"] }));

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = send(&app, req(method, "/api/change", &[c])).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method}");
        assert!(r.body["error"].as_str().unwrap().contains("X-Vigil-CSRF"));
    }
    let wrong_value = send(&app, req("POST", "/api/change", &[c, ("x-vigil-csrf", "yes")])).await;
    assert_eq!(wrong_value.status, StatusCode::FORBIDDEN);
    let ok = send(&app, req("POST", "/api/change", &[c, ("X-Vigil-CSRF", "1")])).await;
    assert_eq!((ok.status, ok.body), (StatusCode::OK, json!("alice")));
    // A proxy's basic auth does not hide the cookie.
    let basic = send(&app, req("GET", "/api/me", &[c, ("authorization", "Basic YTpi")])).await;
    assert_eq!(basic.status, StatusCode::OK);

    // Logout needs the header too, then ends the session and clears the cookie.
    assert_eq!(send(&app, req("POST", "/api/logout", &[c])).await.status, StatusCode::FORBIDDEN);
    let out = send(&app, req("POST", "/api/logout", &[c, ("x-vigil-csrf", "1")])).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(out.headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(send(&app, req("GET", "/api/me", &[c])).await.status, StatusCode::UNAUTHORIZED);
    let again = send(&app, req("POST", "/api/logout", &[c, ("x-vigil-csrf", "1")])).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn secure_cookie_under_tls() {
    let opts = AuthOptions { secure_cookie: true, ..fast() };
    let app = app(Arc::new(Auth::new(two_users("secure"), opts).unwrap()));
    let r = login(&app, "alice", PW).await;
    assert!(r.headers[header::SET_COOKIE].to_str().unwrap().ends_with("; Path=/; Secure"));
}

#[tokio::test]
async fn viewer_camera_permissions() {
    let app = app(Arc::new(Auth::new(two_users("cameras"), fast()).unwrap()));
    let (k, bob) = bearer(&token(&app, "bob").await);
    assert_eq!(send(&app, req("GET", "/api/cameras/cam1", &[(k, &bob)])).await.status, StatusCode::OK);
    let other = send(&app, req("GET", "/api/cameras/cam2", &[(k, &bob)])).await;
    assert_eq!(
        (other.status, other.body),
        (StatusCode::FORBIDDEN, json!({ "error": "no permission for camera cam2" }))
    );
    let admin_only = send(&app, req("GET", "/api/admin", &[(k, &bob)])).await;
    assert_eq!(admin_only.status, StatusCode::FORBIDDEN);

    let (k, alice) = bearer(&token(&app, "alice").await);
    assert_eq!(send(&app, req("GET", "/api/cameras/cam2", &[(k, &alice)])).await.status, StatusCode::OK);
    assert_eq!(send(&app, req("GET", "/api/admin", &[(k, &alice)])).await.body, json!("alice"));

    let all = User { name: "v".into(), role: Role::Viewer, cameras: cams(&["*"]) };
    let none = User { name: "v".into(), role: Role::Viewer, cameras: vec![] };
    assert!(all.may_view("anything") && !all.is_admin());
    assert!(!none.may_view("cam1"));
}

#[tokio::test]
async fn disabled_mode_is_anonymous_admin() {
    let auth = Arc::new(Auth::disabled());
    assert!(auth.is_disabled());
    let app = app(auth);
    let me = send(&app, req("GET", "/api/me", &[])).await;
    assert_eq!(me.body, json!({ "user": "anonymous", "role": "admin", "cameras": ["*"] }));
    assert_eq!(send(&app, req("GET", "/api/admin", &[])).await.status, StatusCode::OK);
    // With no login at all, the CSRF header is what keeps other sites from posting.
    assert_eq!(send(&app, req("POST", "/api/change", &[])).await.status, StatusCode::FORBIDDEN);
    assert_eq!(send(&app, req("POST", "/api/change", &[("x-vigil-csrf", "1")])).await.status, StatusCode::OK);
    let r = login(&app, "whoever", "whatever").await;
    assert_eq!((r.status, &r.body["user"]), (StatusCode::OK, &json!("anonymous")));
}

#[tokio::test]
async fn idle_sessions_expire() {
    let opts = AuthOptions { idle_timeout: Duration::from_secs(1), ..fast() };
    let app = app(Arc::new(Auth::new(two_users("expiry"), opts).unwrap()));
    let (k, v) = bearer(&token(&app, "alice").await);
    // Use keeps it alive...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(send(&app, req("GET", "/api/me", &[(k, &v)])).await.status, StatusCode::OK);
    }
    // ...idleness ends it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(send(&app, req("GET", "/api/me", &[(k, &v)])).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn users_file_changes_take_effect() {
    let path = two_users("reload");
    let auth = Arc::new(Auth::new(&path, fast()).unwrap());
    let app = app(auth.clone());
    let (k, alice) = bearer(&token(&app, "alice").await);
    let (_, bob) = bearer(&token(&app, "bob").await);
    assert_eq!(login(&app, "carol", PW).await.status, StatusCode::UNAUTHORIZED);

    add_user(&path, "carol", PW, Role::Viewer, &[], false).unwrap();
    assert_eq!(login(&app, "carol", PW).await.status, StatusCode::OK);
    assert_eq!(auth.user_count(), 3);

    // Removing a user ends their sessions; changing a password does too.
    remove_user(&path, "alice").unwrap();
    assert_eq!(send(&app, req("GET", "/api/me", &[(k, &alice)])).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&app, req("GET", "/api/me", &[(k, &bob)])).await.status, StatusCode::OK);
    add_user(&path, "bob", "a new password", Role::Viewer, &cams(&["cam1"]), true).unwrap();
    assert_eq!(send(&app, req("GET", "/api/me", &[(k, &bob)])).await.status, StatusCode::UNAUTHORIZED);

    // A broken file keeps the users read before.
    std::fs::write(&path, "not toml [").unwrap();
    assert_eq!(login(&app, "carol", PW).await.status, StatusCode::OK);
}

#[tokio::test]
async fn reload_waits_for_the_interval() {
    let path = two_users("interval");
    let opts = AuthOptions { reload_interval: Duration::from_secs(3600), ..AuthOptions::default() };
    let app = app(Arc::new(Auth::new(&path, opts).unwrap()));
    add_user(&path, "carol", PW, Role::Viewer, &[], false).unwrap();
    assert_eq!(login(&app, "carol", PW).await.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn missing_file_has_no_users() {
    let auth = Auth::new(users_file("missing"), fast()).unwrap();
    assert_eq!(auth.user_count(), 0);
    assert!(list_users(&users_file("missing")).unwrap().is_empty());
}
