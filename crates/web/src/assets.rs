//! The web app, embedded at build time: a release is one file.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const DETECT_JS: &str = include_str!("../assets/detect.js");
const JOBS_JS: &str = include_str!("../assets/jobs.js");
const PROCESS_JS: &str = include_str!("../assets/process.js");
const APP_CSS: &str = include_str!("../assets/app.css");

fn asset(body: &'static str, mime: &'static str) -> impl IntoResponse {
    // The page may change with every release: revalidate, never stale.
    ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "no-cache")], body)
}

pub fn routes() -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { asset(INDEX, "text/html; charset=utf-8") }))
        .route("/app.js", get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/detect.js", get(|| async { asset(DETECT_JS, "text/javascript; charset=utf-8") }))
        .route("/jobs.js", get(|| async { asset(JOBS_JS, "text/javascript; charset=utf-8") }))
        .route("/process.js", get(|| async { asset(PROCESS_JS, "text/javascript; charset=utf-8") }))
        .route("/app.css", get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }))
}
