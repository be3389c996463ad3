//! Reading jobs and results back (`vigil jobs`, `vigil results`, `vigil
//! submit --wait`, the web app): one bounded read of each topic. Blocking:
//! call it off the async workers.

use crate::{Assembly, Chunk, Error, Job, Whole};
use bus::{KafkaConfig, topics};
use rdkafka::Message;
use schema::video::{VideoFrame, VideoObject, VideoResult, VideoSummary};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn range(kafka: &KafkaConfig, topic: &'static str, timeout: Duration) -> Result<bus::range::Range, Error> {
    let spec = topics::plan().into_iter().find(|t| t.name == topic).expect("topic in the plan");
    let partitions = kafka.partition_counts(&[topic.to_string()])?.get(topic).copied().unwrap_or(spec.partitions);
    Ok(bus::range::Range::all(topic, spec.delivery, partitions, timeout))
}

/// Every job on `vigil.video.jobs`, by video id: each the furthest state
/// its records reached (a collector's restart may publish an earlier
/// state again; `Job::update` never goes back).
pub fn jobs(kafka: &KafkaConfig, timeout: Duration) -> Result<BTreeMap<String, Job>, Error> {
    let mut out: BTreeMap<String, Job> = BTreeMap::new();
    bus::range::read(kafka, &range(kafka, topics::VIDEO_JOBS, timeout)?, |m| {
        let Some(job) = m.payload().and_then(|p| serde_json::from_slice::<Job>(p).ok()) else { return };
        match out.get_mut(&job.id) {
            Some(j) => {
                j.update(&job);
            }
            None => {
                out.insert(job.id.clone(), job);
            }
        }
    })?;
    Ok(out)
}

/// One video's results, each record once (copies a resumed collector
/// published again are dropped by id), frames in order.
#[derive(Debug, Default, serde::Serialize)]
pub struct Results {
    pub summary: Option<VideoSummary>,
    pub objects: Vec<VideoObject>,
    pub frames: Vec<VideoFrame>,
}

pub fn results(kafka: &KafkaConfig, video: &str, timeout: Duration) -> Result<Results, Error> {
    let mut out = Results::default();
    let mut seen = BTreeSet::new();
    bus::range::read(kafka, &range(kafka, topics::VIDEO_RESULTS, timeout)?, |m| {
        if m.key() != Some(video.as_bytes()) {
            return;
        }
        let Some(r) = m.payload().and_then(|p| serde_json::from_slice::<VideoResult>(p).ok()) else { return };
        let id = match &r {
            VideoResult::Frame(f) => &f.id,
            VideoResult::Object(o) => &o.id,
            VideoResult::Summary(s) => &s.id,
        };
        if !seen.insert(id.clone()) {
            return;
        }
        match r {
            VideoResult::Frame(f) => out.frames.push(f),
            VideoResult::Object(o) => out.objects.push(o),
            VideoResult::Summary(s) => out.summary = Some(s),
        }
    })?;
    out.frames.sort_by_key(|f| f.frame);
    Ok(out)
}

/// One video put back together from `vigil.video.chunks` (while the topic
/// keeps its chunks), in memory up to 64 MB, else in a file in `work_dir`.
pub fn video(kafka: &KafkaConfig, id: &str, work_dir: &std::path::Path, timeout: Duration) -> Result<Whole, Error> {
    let mut assembly: Option<Assembly> = None;
    let mut failed: Option<Error> = None;
    let read = bus::range::read(kafka, &range(kafka, topics::VIDEO_CHUNKS, timeout)?, |m| {
        if m.key() != Some(id.as_bytes()) || failed.is_some() {
            return;
        }
        let Some(c) = m.payload().and_then(|p| Chunk::decode(p).ok()) else { return };
        let a = match &mut assembly {
            Some(a) => a,
            None => match Assembly::new(&c.meta, 64 << 20, work_dir) {
                Ok(a) => assembly.insert(a),
                Err(e) => {
                    failed = Some(e);
                    return;
                }
            },
        };
        // A chunk that does not fit this video (another submission under
        // the same id) is left out; the whole file's checksum decides.
        let _ = a.add(&c);
    });
    if let Some(e) = read.err().map(Error::from).or(failed) {
        // A spill file of a video not put together is of no use.
        if let Some(a) = assembly {
            a.discard();
        }
        return Err(e);
    }
    let a = assembly.ok_or_else(|| Error::Video {
        video: id.to_string(),
        why: format!("no chunks of it on {} (the topic keeps them a limited time)", topics::VIDEO_CHUNKS),
    })?;
    a.finish()
}

impl Results {
    /// MOTChallenge results: `frame,id,x,y,w,h,conf,-1,-1,-1`, frames
    /// from 1, an integer per object id in order of first appearance;
    /// detections without an id (not yet confirmed) are left out.
    pub fn mot(&self) -> String {
        let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
        let mut out = String::new();
        for f in &self.frames {
            for o in &f.objects {
                let Some(oid) = o.object_id.as_deref() else { continue };
                let next = ids.len() + 1;
                let n = *ids.entry(oid).or_insert(next);
                let [x1, y1, x2, y2] = o.bbox;
                out.push_str(&format!(
                    "{},{n},{:.2},{:.2},{:.2},{:.2},{:.4},-1,-1,-1\n",
                    f.frame + 1,
                    x1,
                    y1,
                    x2 - x1,
                    y2 - y1,
                    o.score
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::Object;

    #[test]
    fn mot_lines_number_objects_and_frames_from_one() {
        let obj = |id: Option<&str>| Object {
            object_id: id.map(str::to_string),
            class: "person".into(),
            class_id: 0,
            score: 0.9,
            bbox: [10.0, 20.0, 40.0, 80.0],
        };
        let frame = |n: u64, objects| VideoFrame {
            id: format!("v/frame/{n}"),
            video: "v".into(),
            frame: n,
            time_us: 0,
            model: "m".into(),
            width: 100,
            height: 100,
            objects,
        };
        let r = Results {
            frames: vec![
                frame(0, vec![obj(Some("v/0/0/person")), obj(None)]),
                frame(1, vec![obj(Some("v/1/0/person")), obj(Some("v/0/0/person"))]),
            ],
            ..Results::default()
        };
        assert_eq!(
            r.mot(),
            "1,1,10.00,20.00,30.00,60.00,0.9000,-1,-1,-1\n\
             2,2,10.00,20.00,30.00,60.00,0.9000,-1,-1,-1\n\
             2,1,10.00,20.00,30.00,60.00,0.9000,-1,-1,-1\n"
        );
    }
}
