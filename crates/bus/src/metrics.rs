//! A small Prometheus registry and the `/metrics` endpoint every role serves.
//!
//! Handles (`Counter`, `Gauge`) are looked up once per camera/topic and then
//! updated with a single atomic operation, so hot paths take no lock.
//! Names follow `vigil_<stage>_<what>_<unit>`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Default)]
struct Inner {
    /// name → (kind, help, rendered labels → value bits)
    families: Mutex<BTreeMap<String, (Kind, String, BTreeMap<String, Arc<AtomicU64>>)>>,
}

/// The registry of one process; clone it freely.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Inner>);

/// A monotonically increasing count.
#[derive(Clone)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (stored as f64 bits).
#[derive(Clone)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl Metrics {
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        Counter(self.series(name, help, Kind::Counter, labels))
    }

    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        Gauge(self.series(name, help, Kind::Gauge, labels))
    }

    fn series(&self, name: &str, help: &str, kind: Kind, labels: &[(&str, &str)]) -> Arc<AtomicU64> {
        let mut rendered = String::new();
        for (i, (k, v)) in labels.iter().enumerate() {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = write!(rendered, "{}{k}=\"{v}\"", if i > 0 { "," } else { "" });
        }
        let mut fams = self.0.families.lock().unwrap_or_else(|e| e.into_inner());
        let fam = fams.entry(name.to_string()).or_insert_with(|| (kind, help.to_string(), BTreeMap::new()));
        let init = if kind == Kind::Gauge { 0f64.to_bits() } else { 0 };
        fam.2.entry(rendered).or_insert_with(|| Arc::new(AtomicU64::new(init))).clone()
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let fams = self.0.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, (kind, help, series)) in fams.iter() {
            let t = if *kind == Kind::Counter { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {t}");
            for (labels, v) in series {
                let raw = v.load(Ordering::Relaxed);
                let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
                match kind {
                    Kind::Counter => writeln!(out, "{name}{braces} {raw}"),
                    Kind::Gauge => writeln!(out, "{name}{braces} {}", f64::from_bits(raw)),
                }
                .ok();
            }
        }
        out
    }

    /// Serves `GET /metrics` (and `/healthz`) on `addr` until the task is dropped.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<tokio::task::JoinHandle<()>> {
        self.serve_with(addr, axum::Router::new()).await
    }

    /// Serves the metrics routes plus `extra` (a role's own pages) on `addr`.
    pub async fn serve_with(
        self,
        addr: SocketAddr,
        extra: axum::Router,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let app = self.router().merge(extra);
        Ok(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        }))
    }

    /// The routes, for a role that serves other things on the same port.
    pub fn router(self) -> axum::Router {
        use axum::routing::get;
        axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let m = self.clone();
                    async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_exposition_format() {
        let m = Metrics::default();
        let c = m.counter("vigil_test_frames_total", "Frames.", &[("camera", "a\"b"), ("topic", "t")]);
        c.add(3);
        m.counter("vigil_test_frames_total", "Frames.", &[("camera", "a\"b"), ("topic", "t")]).inc();
        m.gauge("vigil_test_age_seconds", "Age.", &[]).set(1.5);
        let text = m.render();
        assert!(text.contains("# TYPE vigil_test_frames_total counter"), "{text}");
        assert!(text.contains("vigil_test_frames_total{camera=\"a\\\"b\",topic=\"t\"} 4"), "{text}");
        assert!(text.contains("vigil_test_age_seconds 1.5"), "{text}");
        assert_eq!(c.get(), 4);
    }
}
