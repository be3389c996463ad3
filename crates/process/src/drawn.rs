//! Each camera's rules in effect: the config file's, replaced camera by
//! camera by those drawn in the web app (`vigil.rules`, followed by one
//! table reader). The processor reads the topic to its end before it takes
//! its first frame, so a restarted processor starts from the rules the
//! last one had; a change applies to the frames processed after the
//! processor sees it, without a restart.

use crate::rules::Rules;
use bus::KafkaConfig;
use bus::table::Table;
use schema::CameraRules;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long the rules topic may take to be read at the start.
const CATCH_UP: Duration = Duration::from_secs(30);

pub struct Effective {
    config: BTreeMap<String, Rules>,
    /// Where to follow `vigil.rules` (none: the config's rules only).
    kafka: Option<KafkaConfig>,
    drawn: Option<Table<CameraRules>>,
    /// The table's changes when `rules` was made.
    seen: u64,
    rules: BTreeMap<String, Rules>,
}

impl Effective {
    pub fn new(config: BTreeMap<String, Rules>, kafka: Option<KafkaConfig>) -> Self {
        Effective { rules: config.clone(), config, kafka, drawn: None, seen: 0 }
    }

    /// Starts following `vigil.rules` and waits until it is read to its
    /// end (once; again after the reader stopped).
    pub async fn follow(&mut self, metrics: &bus::Metrics) -> Result<(), stage::Error> {
        let Some(kafka) = &self.kafka else { return Ok(()) };
        if self.drawn.as_ref().is_some_and(|t| !t.stopped()) {
            return Ok(());
        }
        let topic = bus::topics::plan().into_iter().find(|t| t.name == bus::topics::RULES).expect("rules topic");
        let table = Table::start(kafka, &topic, topic.partitions, metrics)?;
        table.caught_up(kafka, CATCH_UP).await?;
        self.drawn = Some(table);
        self.seen = u64::MAX;
        Ok(())
    }

    /// The camera's rules now; an error when the reader of `vigil.rules`
    /// stopped (the runtime restarts the processor, which follows anew).
    pub fn get(&mut self, camera: &str) -> Result<Option<&Rules>, stage::Error> {
        if let Some(t) = &self.drawn {
            if t.stopped() {
                return Err(stage::Error::transient("the reader of vigil.rules stopped"));
            }
            if t.changes() != self.seen {
                self.seen = t.changes();
                self.rules = self.config.clone();
                for r in t.rows() {
                    // The web app checks rules before it publishes them; a
                    // record that fails anyway leaves the config's in effect.
                    match Rules::from_specs(&r.zones, &r.lines) {
                        Ok(rules) => {
                            tracing::info!(camera = %r.camera, by = %r.by, "rules drawn in the web app in effect");
                            self.rules.insert(r.camera.clone(), rules);
                        }
                        Err(e) => tracing::warn!(camera = %r.camera, error = %e, "rules on vigil.rules refused"),
                    }
                }
            }
        }
        Ok(self.rules.get(camera))
    }
}
