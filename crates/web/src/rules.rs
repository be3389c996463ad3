//! The stream processor's side of the web app: each camera's zones and
//! lines (admins draw them; they go to `vigil.rules`, which the processors
//! follow, so a change applies without a restart) and its counts.
//!
//! - `GET /api/cameras/{id}/rules`: the rules in effect, `source` `config`
//!   (the config file's) or `web` (drawn here, by whom and when);
//! - `PUT /api/cameras/{id}/rules` (admin): `{"zones": [...], "lines":
//!   [...]}` as in the config file, checked as the processor checks them
//!   (an error names the rule), published, and returned as stored;
//! - `DELETE /api/cameras/{id}/rules` (admin): back to the config file's;
//! - `GET /api/cameras/{id}/counts?from=&to=`: the minutes of
//!   `vigil.counts`, each once.

use crate::App;
use crate::api::{ApiError, Range, camera};
use crate::auth::{Admin, User};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use rdkafka::producer::FutureRecord;
use schema::{CameraRules, RuleSpec};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub fn routes() -> axum::Router<App> {
    axum::Router::new()
        .route("/api/cameras/{id}/rules", get(rules).put(save).delete(reset))
        .route("/api/cameras/{id}/counts", get(counts))
}

#[derive(Serialize)]
struct InEffect {
    #[serde(flatten)]
    rules: CameraRules,
    /// `config` or `web`.
    source: &'static str,
}

async fn rules(State(app): State<App>, user: User, Path(id): Path<String>) -> Result<Json<InEffect>, ApiError> {
    camera(&app, &user, &id)?;
    let drawn = app.rules.rows().into_iter().find(|r| r.camera == id);
    let (rules, source) = match drawn {
        Some(r) => (r, "web"),
        None => (
            app.config_rules
                .get(&id)
                .cloned()
                .unwrap_or_else(|| CameraRules { camera: id.clone(), ..Default::default() }),
            "config",
        ),
    };
    Ok(Json(InEffect { rules, source }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Drawn {
    #[serde(default)]
    zones: Vec<RuleSpec>,
    #[serde(default)]
    lines: Vec<RuleSpec>,
}

async fn save(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
    Json(mut body): Json<Drawn>,
) -> Result<Json<CameraRules>, ApiError> {
    camera(&app, &user, &id)?;
    for r in body.zones.iter_mut().chain(body.lines.iter_mut()) {
        if r.camera.is_empty() {
            r.camera.clone_from(&id);
        } else if r.camera != id {
            return Err(ApiError::bad(format!("rule {:?} names camera {:?}, not {id:?}", r.name, r.camera)));
        }
    }
    process::Rules::from_specs(&body.zones, &body.lines).map_err(ApiError::bad)?;
    let record = CameraRules {
        camera: id.clone(),
        zones: body.zones,
        lines: body.lines,
        by: user.name,
        updated_us: bus::now_us(),
    };
    publish(&app, &id, Some(&record)).await?;
    Ok(Json(record))
}

async fn reset(State(app): State<App>, Admin(user): Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    camera(&app, &user, &id)?;
    publish(&app, &id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a camera's rules (or a tombstone) and waits until the broker has
/// them, then (a few seconds at most) until this web app's own table does,
/// so the next `GET` shows them.
async fn publish(app: &App, id: &str, rules: Option<&CameraRules>) -> Result<(), ApiError> {
    let payload = rules.map(|r| serde_json::to_vec(r).expect("rules serialise"));
    if payload.as_ref().is_some_and(|p| p.len() > app.kafka.max_message_bytes) {
        return Err(ApiError::bad("too many rules or points for one message"));
    }
    let producer = app.kafka.producer(bus::Delivery::LastValue, 64).map_err(ApiError::internal)?;
    let mut record = FutureRecord::<str, [u8]>::to(bus::topics::RULES).key(id);
    if let Some(p) = &payload {
        record = record.payload(p);
    }
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| ApiError::internal(e))?;
    let want = rules.map(|r| r.updated_us);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        let seen = app.rules.rows().into_iter().find(|r| r.camera == id).map(|r| r.updated_us);
        if seen == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn counts(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
    Query(q): Query<Range>,
) -> Result<Json<Vec<schema::Count>>, ApiError> {
    let (from, to) = q.of_camera(&app, &user, &id)?;
    let _permit = app.scans.acquire().await.map_err(ApiError::internal)?;
    let kafka = app.kafka.clone();
    let partitions = app.partitions.get(bus::topics::COUNTS).copied().unwrap_or(4);
    let rows = tokio::task::spawn_blocking(move || {
        process::read::counts(&kafka, partitions, Some(&id), from, to, Duration::from_secs(15))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(rows))
}
