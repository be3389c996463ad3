//! Counts read back from `vigil.counts` (for `vigil counts` and the web
//! app): copies dropped by id, oldest minute first.

use bus::{KafkaConfig, topics};
use schema::Count;
use std::collections::BTreeSet;
use std::time::Duration;

/// The minutes starting in [`from_us`, `to_us`), of `camera` if given.
pub fn counts(
    kafka: &KafkaConfig,
    partitions: i32,
    camera: Option<&str>,
    from_us: i64,
    to_us: i64,
    timeout: Duration,
) -> Result<Vec<Count>, bus::Error> {
    use rdkafka::Message;
    let range = bus::range::Range::all(topics::COUNTS, bus::Delivery::ExactlyOnce, partitions, timeout);
    let (mut seen, mut out) = (BTreeSet::new(), Vec::new());
    bus::range::read(kafka, &range, |m| {
        if let Some(c) = m.payload().and_then(|p| serde_json::from_slice::<Count>(p).ok())
            && (from_us..to_us).contains(&c.start_us)
            && camera.is_none_or(|cam| c.camera == cam)
            && seen.insert(c.id.clone())
        {
            out.push(c);
        }
    })?;
    out.sort_by(|a, b| (a.start_us, &a.camera, &a.rule, &a.class).cmp(&(b.start_us, &b.camera, &b.rule, &b.class)));
    Ok(out)
}
