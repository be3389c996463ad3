//! What the detector found, for the web app: live boxes over the live view,
//! the boxes of a recorded range, and object events.
//!
//! Live: one reader of `vigil.detections` per server (`bus::Reader`),
//! started when the first live viewer connects and stopped when the last
//! one leaves. It reads from the end and never commits (at-most-once
//! reading, as live video) and keeps only each camera's newest record in a
//! `watch` channel: a viewer that is slow to take them misses some, never
//! falls behind.
//!
//! Ranges and events: a time-bounded read of the topic (`scan`), each
//! record taken once (dropped by id: `bus::dedupe`).

use crate::App;
use crate::api::{ApiError, Range, camera};
use crate::auth::User;
use crate::scan::{self, Window};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bus::dedupe::Dedupe;
use bus::{KafkaConfig, Metrics, Reader, TopicSpec};
use rdkafka::Offset;
use rdkafka::message::Message;
use schema::{Detections, Event};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// A record is only worth showing to a viewer who just connected if it is
/// this fresh (the browser fades boxes out after 1.5 s anyway).
const FRESH_US: i64 = 2_000_000;
/// The most records one range request returns (the web app asks for a
/// minute at a time).
const MAX_RECORDS: usize = 10_000;
/// How long one range read of a topic may take.
const SCAN_TIMEOUT: Duration = Duration::from_secs(15);
/// Events one request returns unless it asks (`limit`), and at most.
const DEFAULT_EVENTS: usize = 100;
const MAX_EVENTS: usize = 1000;

/// A camera's newest record, as the live WebSocket's text message.
#[derive(Debug)]
pub struct LiveRecord {
    pub capture_us: i64,
    pub text: String,
}

/// The message a live viewer gets: the record, tagged.
#[derive(Serialize)]
struct Tagged<'a> {
    r#type: &'static str,
    #[serde(flatten)]
    record: &'a Detections,
}

type Latest = watch::Sender<Option<Arc<LiveRecord>>>;

pub struct Hub {
    kafka: KafkaConfig,
    topic: TopicSpec,
    partitions: i32,
    metrics: Metrics,
    feed: Mutex<Weak<Feed>>,
}

struct Feed {
    cameras: Arc<Mutex<HashMap<String, Latest>>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort(); // the last live viewer left
    }
}

/// One live viewer's subscription to a camera's detections.
pub struct LiveViewer {
    _feed: Arc<Feed>,
    rx: watch::Receiver<Option<Arc<LiveRecord>>>,
}

impl LiveViewer {
    /// The next newer record; never resolves once the feed has ended.
    pub async fn next(&mut self) -> Arc<LiveRecord> {
        loop {
            if self.rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            if let Some(r) = self.rx.borrow_and_update().clone() {
                return r;
            }
        }
    }
}

impl Hub {
    pub fn new(kafka: KafkaConfig, topic: TopicSpec, partitions: i32, metrics: Metrics) -> Arc<Self> {
        Arc::new(Hub { kafka, topic, partitions, metrics, feed: Mutex::new(Weak::new()) })
    }

    /// Subscribes to `camera`'s detections, starting the consumer if none
    /// runs. The newest record is delivered at once if it is fresh.
    pub fn watch(&self, camera: &str) -> Result<LiveViewer, bus::Error> {
        let mut slot = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        let feed = match slot.upgrade().filter(|f| !f.task.is_finished()) {
            Some(f) => f,
            None => {
                let f = self.start()?;
                *slot = Arc::downgrade(&f);
                f
            }
        };
        drop(slot);
        let mut cameras = feed.cameras.lock().unwrap_or_else(|p| p.into_inner());
        cameras.retain(|_, tx| tx.receiver_count() > 0);
        let mut rx = cameras.entry(camera.to_string()).or_insert_with(|| watch::channel(None).0).subscribe();
        drop(cameras);
        let stale = rx.borrow().as_ref().is_none_or(|r| bus::now_us().saturating_sub(r.capture_us) > FRESH_US);
        if stale {
            rx.mark_unchanged();
        } else {
            rx.mark_changed();
        }
        Ok(LiveViewer { _feed: feed, rx })
    }

    fn start(&self) -> Result<Arc<Feed>, bus::Error> {
        // Read as live video is: from the end, never committing (with the
        // topic's own settings: read_committed, no aborted records).
        let from: HashMap<i32, Offset> = (0..self.partitions).map(|p| (p, Offset::End)).collect();
        let mut reader = Reader::assign(&self.kafka, &self.topic, bus::topics::groups::WEB, &from, &self.metrics)?;
        let cameras: Arc<Mutex<HashMap<String, Latest>>> = Default::default();
        let shared = cameras.clone();
        let task = tokio::spawn(async move {
            let mut dedupe = Dedupe::default();
            loop {
                let m = match reader.recv().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::error!(error = %e, "live detections stopped");
                        return;
                    }
                };
                // Only cameras someone watches are parsed.
                let watched = m.key().and_then(|k| std::str::from_utf8(k).ok()).is_none_or(|k| {
                    shared.lock().unwrap_or_else(|p| p.into_inner()).get(k).is_some_and(|tx| tx.receiver_count() > 0)
                });
                if !watched {
                    continue;
                }
                let Some(r) = m.payload().and_then(|p| serde_json::from_slice::<Detections>(p).ok()) else {
                    continue;
                };
                if !dedupe.take(&r.id) {
                    continue;
                }
                let text = serde_json::to_string(&Tagged { r#type: "detections", record: &r }).unwrap_or_default();
                let live = Arc::new(LiveRecord { capture_us: r.capture_us, text });
                // Only a newer frame's record replaces the one shown: a
                // restarted detector republishes older frames' records.
                if let Some(tx) = shared.lock().unwrap_or_else(|p| p.into_inner()).get(&r.camera) {
                    tx.send_if_modified(|shown| {
                        let newer = shown.as_ref().is_none_or(|s| s.capture_us < live.capture_us);
                        if newer {
                            *shown = Some(live);
                        }
                        newer
                    });
                }
            }
        });
        Ok(Arc::new(Feed { cameras, task: task.abort_handle() }))
    }
}

fn scan_error(e: bus::Error) -> ApiError {
    match e {
        e @ bus::Error::TimedOut { .. } => {
            ApiError(StatusCode::GATEWAY_TIMEOUT, format!("{e} (ask for a shorter range)"))
        }
        e => ApiError(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// A window of one of the topics read here, with the topic's settings.
fn window(app: &App, topic: &'static str, from_us: i64, to_us: i64) -> Window {
    let spec = app.plan.iter().find(|t| t.name == topic);
    Window {
        topic: topic.into(),
        delivery: spec.map_or(bus::Delivery::AtMostOnce, |t| t.delivery),
        partitions: app.partitions.get(topic).copied().or(spec.map(|t| t.partitions)).unwrap_or(1),
        from_us,
        to_us,
        timeout: SCAN_TIMEOUT,
    }
}

#[derive(Serialize)]
pub struct RangeDetections {
    from: i64,
    to: i64,
    /// One record per analysed frame, by capture time.
    records: Vec<Detections>,
    /// More records than one answer holds: ask for a shorter range.
    truncated: bool,
}

/// `GET /api/cameras/{id}/detections?from=&to=`: a camera's records in a
/// range, each once.
pub async fn range(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
    Query(q): Query<Range>,
) -> Result<Json<RangeDetections>, ApiError> {
    let (from, to) = q.of_camera(&app, &user, &id)?;
    let _permit = app.scans.acquire().await.map_err(ApiError::internal)?;
    let window = window(&app, bus::topics::DETECTIONS, from, to);
    let kafka = app.kafka.clone();
    let (records, truncated) = tokio::task::spawn_blocking(move || {
        let mut dedupe = Dedupe::default();
        let (mut out, mut truncated) = (Vec::new(), false);
        scan::scan(&kafka, &window, |m| {
            // Keyed by camera: other cameras' records are not even parsed.
            if m.key() != Some(id.as_bytes()) {
                return;
            }
            let Some(r) = m.payload().and_then(|p| serde_json::from_slice::<Detections>(p).ok()) else { return };
            if r.camera != id || !(from..=to).contains(&r.capture_us) || !dedupe.take(&r.id) {
                return;
            }
            if out.len() < MAX_RECORDS {
                out.push(r);
            } else {
                truncated = true;
            }
        })?;
        Ok::<_, bus::Error>((out, truncated))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(scan_error)?;
    let mut records = records;
    records.sort_by(|a, b| (a.capture_us, &a.model).cmp(&(b.capture_us, &b.model)));
    Ok(Json(RangeDetections { from, to, records, truncated }))
}

#[derive(Deserialize)]
pub struct EventQuery {
    camera: Option<String>,
    class: Option<String>,
    /// A rule of `vigil process` (a zone or line, or `motion`): its events
    /// instead of object events; `*`: every rule's.
    rule: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<usize>,
}

/// Whether an event is one the query asks for: an object event, or with
/// `rule`, an event of that rule.
fn wanted(e: &Event, q: &EventQuery, from: i64, to: i64) -> bool {
    let class = match (q.rule.as_deref().filter(|r| !r.is_empty()), &e.object, &e.rule) {
        (None, Some(o), _) if matches!(e.kind.as_str(), "object-appeared" | "object-left") => &o.class,
        (Some(name), _, Some(r)) if r.rule == name || name == "*" => &r.class,
        _ => return false,
    };
    (from..=to).contains(&e.time_us)
        && q.camera.as_ref().is_none_or(|c| e.camera.as_ref() == Some(c))
        && q.class.as_ref().is_none_or(|c| c.is_empty() || class == c)
}

/// `GET /api/events?camera=&class=&rule=&from=&to=&limit=`: object events
/// (or a rule's), newest first, each once, only of cameras the user may see.
pub async fn events(
    State(app): State<App>,
    user: User,
    Query(q): Query<EventQuery>,
) -> Result<Json<Vec<Event>>, ApiError> {
    let (from, to) = Range { from: q.from, to: q.to }.resolve()?;
    if let Some(c) = q.camera.as_deref().filter(|c| !c.is_empty()) {
        camera(&app, &user, c)?;
    }
    let q = EventQuery { camera: q.camera.filter(|c| !c.is_empty()), ..q };
    let limit = q.limit.unwrap_or(DEFAULT_EVENTS);
    if !(1..=MAX_EVENTS).contains(&limit) {
        return Err(ApiError::bad(format!("limit {limit}: use 1 to {MAX_EVENTS}")));
    }
    let _permit = app.scans.acquire().await.map_err(ApiError::internal)?;
    let window = window(&app, bus::topics::EVENTS, from, to);
    let kafka = app.kafka.clone();
    let mut events = tokio::task::spawn_blocking(move || {
        let (mut seen, mut out) = (HashSet::new(), Vec::new());
        scan::scan(&kafka, &window, |m| {
            let Some(e) = m.payload().and_then(|p| serde_json::from_slice::<Event>(p).ok()) else { return };
            if wanted(&e, &q, from, to)
                && user.may_view(e.camera.as_deref().unwrap_or_default())
                && seen.insert(e.id.clone())
            {
                out.push(e);
            }
        })?;
        Ok::<_, bus::Error>(out)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(scan_error)?;
    events.sort_by(|a, b| (b.time_us, &b.id).cmp(&(a.time_us, &a.id)));
    events.truncate(limit);
    Ok(Json(events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::{BestFrame, ObjectInfo};

    fn event(kind: &str, camera: &str, class: &str, time_us: i64) -> Event {
        let mut e = Event::new(kind, Some(camera), "detect", "");
        e.time_us = time_us;
        e.object = Some(ObjectInfo {
            object_id: format!("{camera}/1/0"),
            class: class.into(),
            model: "m".into(),
            first_seen_us: time_us,
            last_seen_us: time_us,
            best: BestFrame { seq: 1, time_us, score: 0.9, bbox: [0.0, 0.0, 1.0, 1.0] },
        });
        e
    }

    #[test]
    fn a_live_message_is_the_record_tagged() {
        let r = Detections {
            id: "c/7/m".into(),
            camera: "c".into(),
            seq: 7,
            capture_us: 1_000,
            model: "m".into(),
            source: schema::SourceFrame { topic: "vigil.frames".into(), partition: 1, offset: 9 },
            width: 640,
            height: 360,
            objects: vec![schema::Object {
                object_id: Some("c/5/0".into()),
                class: "dog".into(),
                class_id: 16,
                score: 0.5,
                bbox: [1.0, 2.0, 3.0, 4.0],
            }],
            motion: None,
        };
        let text = serde_json::to_string(&Tagged { r#type: "detections", record: &r }).unwrap();
        assert!(text.starts_with(r#"{"type":"detections","id":"c/7/m","#), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["objects"][0]["box"], serde_json::json!([1.0, 2.0, 3.0, 4.0]));
        assert_eq!((v["width"].as_u64(), v["capture_us"].as_i64()), (Some(640), Some(1_000)));
    }

    #[test]
    fn event_filters() {
        let q = |camera: Option<&str>, class: Option<&str>| EventQuery {
            camera: camera.map(Into::into),
            class: class.map(Into::into),
            rule: None,
            from: None,
            to: None,
            limit: None,
        };
        let dog = event("object-appeared", "a", "dog", 50);
        let cases = [
            (q(None, None), &dog, true),
            (q(Some("a"), Some("dog")), &dog, true),
            (q(Some("b"), None), &dog, false),
            (q(None, Some("car")), &dog, false),
            (q(None, Some("")), &dog, true),
        ];
        for (i, (query, e, want)) in cases.into_iter().enumerate() {
            assert_eq!(wanted(e, &query, 0, 100), want, "case {i}");
        }
        assert!(!wanted(&dog, &q(None, None), 60, 100), "outside the range");
        let mut paused = Event::new("archive-paused", Some("a"), "archive", "disk full");
        paused.time_us = 50;
        assert!(!wanted(&paused, &q(None, None), 0, 100), "not an object event");
        // A rule's events only when asked for, by its name.
        let mut crossed = Event::new("line-crossed", Some("a"), "process", "person line-crossed gate");
        crossed.time_us = 50;
        crossed.rule = Some(schema::RuleHit {
            rule: "gate".into(),
            object_id: Some("a/1/0".into()),
            class: "person".into(),
            seq: 1,
            bbox: None,
            direction: Some("left-to-right".into()),
            inside: None,
        });
        let by_rule = |rule: &str, class: Option<&str>| EventQuery { rule: Some(rule.into()), ..q(None, class) };
        assert!(!wanted(&crossed, &q(None, None), 0, 100), "rule events are asked for by rule");
        assert!(wanted(&crossed, &by_rule("gate", Some("person")), 0, 100));
        assert!(!wanted(&crossed, &by_rule("gate", Some("car")), 0, 100));
        assert!(!wanted(&crossed, &by_rule("porch", None), 0, 100));
        assert!(!wanted(&dog, &by_rule("gate", None), 0, 100), "no object events for a rule");
        assert!(wanted(&crossed, &by_rule("*", None), 0, 100), "every rule's");
        assert!(!wanted(&dog, &by_rule("*", None), 0, 100));
    }
}
