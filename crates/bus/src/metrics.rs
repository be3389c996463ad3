//! The process's metrics and the `/metrics` endpoint every role serves,
//! on `prometheus-client` (the OpenMetrics text format, escaping done
//! right, histograms).
//!
//! Handles (`Counter`, `Gauge`, `Histogram`) are looked up once per
//! camera/topic and then updated with a single atomic operation, so hot
//! paths take no lock. Names follow `vigil_<stage>_<what>_<unit>`;
//! counters end in `_total`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter as PCounter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge as PGauge;
use prometheus_client::metrics::histogram::Histogram as PHistogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

type Labels = Vec<(String, String)>;

/// A histogram family's buckets: every series of it gets the same.
#[derive(Clone)]
struct Buckets(Arc<[f64]>);

impl MetricConstructor<PHistogram> for Buckets {
    fn new_metric(&self) -> PHistogram {
        PHistogram::new(self.0.iter().copied())
    }
}

enum Fam {
    Counter(Family<Labels, PCounter>),
    Seconds(Family<Labels, PCounter<f64, AtomicU64>>),
    Gauge(Family<Labels, PGauge<f64, AtomicU64>>),
    Histogram(Family<Labels, PHistogram, Buckets>),
}

#[derive(Default)]
struct Inner {
    registry: Registry,
    families: HashMap<String, Fam>,
}

/// The registry of one process; clone it freely.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<Inner>>);

/// A monotonically increasing count.
#[derive(Clone, Default)]
pub struct Counter(PCounter);

impl Counter {
    pub fn inc(&self) {
        self.0.inc();
    }
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// Seconds spent, summed (a hot path's time, per camera): a counter of
/// fractional seconds.
#[derive(Clone, Default)]
pub struct Seconds(PCounter<f64, AtomicU64>);

impl Seconds {
    pub fn add(&self, d: std::time::Duration) {
        self.0.inc_by(d.as_secs_f64());
    }
    pub fn get(&self) -> f64 {
        self.0.get()
    }
}

/// A value that goes up and down.
#[derive(Clone, Default)]
pub struct Gauge(PGauge<f64, AtomicU64>);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.set(v);
    }
    pub fn get(&self) -> f64 {
        self.0.get()
    }
}

/// A distribution (latencies, durations), in buckets.
#[derive(Clone)]
pub struct Histogram(PHistogram);

impl Histogram {
    pub fn observe(&self, v: f64) {
        self.0.observe(v);
    }
}

/// Buckets for latencies in seconds: 1 ms to ~16 s, doubling.
pub fn latency_buckets() -> Vec<f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15).collect()
}

fn labels(l: &[(&str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Metrics {
    pub fn counter(&self, name: &str, help: &str, l: &[(&str, &str)]) -> Counter {
        let mut inner = self.lock();
        let fam = inner.family(name, help, || Fam::Counter(Family::default()));
        match fam {
            Fam::Counter(f) => Counter(f.get_or_create(&labels(l)).clone()),
            _ => Counter::default(), // a name used as two kinds: a bug, kept harmless
        }
    }

    /// A counter of seconds; its name ends in `_seconds_total`.
    pub fn seconds(&self, name: &str, help: &str, l: &[(&str, &str)]) -> Seconds {
        let mut inner = self.lock();
        match inner.family(name, help, || Fam::Seconds(Family::default())) {
            Fam::Seconds(f) => Seconds(f.get_or_create(&labels(l)).clone()),
            _ => Seconds::default(),
        }
    }

    pub fn gauge(&self, name: &str, help: &str, l: &[(&str, &str)]) -> Gauge {
        let mut inner = self.lock();
        match inner.family(name, help, || Fam::Gauge(Family::default())) {
            Fam::Gauge(f) => Gauge(f.get_or_create(&labels(l)).clone()),
            _ => Gauge::default(),
        }
    }

    /// A histogram series; the first call for a name fixes its buckets.
    pub fn histogram(&self, name: &str, help: &str, l: &[(&str, &str)], buckets: &[f64]) -> Histogram {
        let mut inner = self.lock();
        let b = Buckets(buckets.into());
        match inner.family(name, help, || Fam::Histogram(Family::new_with_constructor(b))) {
            Fam::Histogram(f) => Histogram(f.get_or_create(&labels(l)).clone()),
            _ => Histogram(PHistogram::new(buckets.iter().copied())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The OpenMetrics text exposition (Prometheus reads it).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.lock().registry);
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
                    async move {
                        ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.render())
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }))
    }
}

impl Inner {
    /// The family called `name`, registered on first use. Counters are
    /// registered without their `_total`, which the encoder adds back.
    fn family(&mut self, name: &str, help: &str, make: impl FnOnce() -> Fam) -> &Fam {
        if !self.families.contains_key(name) {
            let fam = make();
            let help = help.trim_end_matches('.').to_string();
            match &fam {
                Fam::Counter(f) => self.registry.register(name.trim_end_matches("_total"), help, f.clone()),
                Fam::Seconds(f) => self.registry.register(name.trim_end_matches("_total"), help, f.clone()),
                Fam::Gauge(f) => self.registry.register(name, help, f.clone()),
                Fam::Histogram(f) => self.registry.register(name, help, f.clone()),
            }
            self.families.insert(name.to_string(), fam);
        }
        &self.families[name]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_exposition_format() {
        let m = Metrics::default();
        let c = m.counter("vigil_test_frames_total", "Frames.", &[("camera", "a\"b\nc"), ("topic", "t")]);
        c.add(3);
        m.counter("vigil_test_frames_total", "Frames.", &[("camera", "a\"b\nc"), ("topic", "t")]).inc();
        m.gauge("vigil_test_age_seconds", "Age.", &[]).set(1.5);
        let h = m.histogram("vigil_test_latency_seconds", "Latency.", &[("camera", "x")], &[0.01, 0.1]);
        h.observe(0.05);
        h.observe(0.5);
        let text = m.render();
        assert!(text.contains("# TYPE vigil_test_frames counter"), "{text}");
        assert!(text.contains("vigil_test_frames_total{camera=\"a\\\"b\\nc\",topic=\"t\"} 4"), "{text}");
        assert!(text.contains("vigil_test_age_seconds 1.5"), "{text}");
        assert!(text.contains("vigil_test_latency_seconds_bucket{le=\"0.1\",camera=\"x\"} 1"), "{text}");
        assert!(text.contains("vigil_test_latency_seconds_count{camera=\"x\"} 2"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let spent = m.seconds("vigil_test_decode_seconds_total", "Decoding.", &[("camera", "x")]);
        spent.add(std::time::Duration::from_millis(1500));
        let text = m.render();
        assert!(text.contains("vigil_test_decode_seconds_total{camera=\"x\"} 1.5"), "{text}");
        assert_eq!(c.get(), 4);
    }
}
