//! Each camera's rules in effect: the config file's, replaced camera by
//! camera by those drawn in the web app (`vigil.rules`, followed by one
//! table reader). A change applies to the frames processed after the
//! processor sees it, without a restart; frames processed again after a
//! crash use the rules in effect then.

use crate::rules::Rules;
use bus::table::Table;
use schema::CameraRules;
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct Effective {
    config: BTreeMap<String, Rules>,
    drawn: Option<Arc<Table<CameraRules>>>,
    /// The table's changes when `rules` was made.
    seen: u64,
    rules: BTreeMap<String, Rules>,
}

impl Effective {
    pub fn new(config: BTreeMap<String, Rules>, drawn: Option<Arc<Table<CameraRules>>>) -> Self {
        Effective { rules: config.clone(), config, drawn, seen: 0 }
    }

    /// The camera's rules now.
    pub fn get(&mut self, camera: &str) -> Option<&Rules> {
        if let Some(t) = &self.drawn
            && t.changes() != self.seen
        {
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
        self.rules.get(camera)
    }
}
