//! Consumer-group membership for stages: how a group splits partitions
//! among its members, and the rebalances a member goes through.
//!
//! librdkafka decides, in a rebalance callback, which partitions a member
//! gets and loses. vigil does not let that callback act on its own: it
//! queues the change and returns, and the reader hands it to its owner
//! (the stage runtime) *before* any further record. The owner finishes
//! with revoked partitions (flush, outputs acknowledged, checkpoint) and
//! only then releases them (`Reader::release`); it reads the checkpoints
//! of assigned ones and only then starts them (`Reader::start`).
//! librdkafka allows the assign/unassign call after the callback returns,
//! as long as it comes within the group's rebalance timeout
//! (`max.poll.interval.ms`); until it comes, the group waits, so no other
//! member starts a partition this one has not finished.

use std::sync::atomic::{AtomicBool, Ordering};

/// A change of a member's partitions, as the group decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rebalance {
    /// These partitions are this member's now; they are read once the
    /// owner says from where (`Reader::start`).
    Assigned(Vec<i32>),
    /// These partitions leave this member; they stop once the owner has
    /// finished with them (`Reader::release`). `lost`: the member's
    /// session expired, so another member may already own them: the
    /// owner must not write anything for them any more (no checkpoint).
    Revoked { partitions: Vec<i32>, lost: bool },
}

/// How a group splits partitions among its members (librdkafka's
/// `partition.assignment.strategy`). Every member of a group must use the
/// same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Assignor {
    /// Eager: every rebalance revokes everything, then assigns anew.
    /// The default: on the embedded broker (tansu 0.6) a SIGKILLed
    /// member's partitions reach the survivors ~9 s after the kill.
    #[default]
    Range,
    /// Eager, partitions dealt round-robin.
    RoundRobin,
    /// Incremental: only partitions that move are revoked. Works on
    /// Apache Kafka; on tansu 0.6, after a member is SIGKILLed the
    /// survivor is left with no partitions at all (see docs/groups.md).
    CooperativeSticky,
}

impl Assignor {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "range" => Ok(Assignor::Range),
            "roundrobin" => Ok(Assignor::RoundRobin),
            "cooperative-sticky" => Ok(Assignor::CooperativeSticky),
            other => Err(format!("\"{other}\": use \"range\", \"roundrobin\" or \"cooperative-sticky\"")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }
}

/// Group settings every stage member shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupSettings {
    pub assignor: Assignor,
    /// A member with no heartbeat for this long is dropped from the group
    /// and its partitions move. librdkafka's default (45 s) would leave a
    /// dead member's cameras unanalysed and unarchived for most of a
    /// minute.
    pub session_timeout_ms: u32,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings { assignor: Assignor::default(), session_timeout_ms: 6000 }
    }
}

impl GroupSettings {
    /// librdkafka properties of a subscribed consumer.
    pub fn consumer_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("partition.assignment.strategy", self.assignor.name().into()),
            ("session.timeout.ms", self.session_timeout_ms.to_string()),
            // Three heartbeats per session, as Kafka recommends.
            ("heartbeat.interval.ms", (self.session_timeout_ms / 3).max(100).to_string()),
        ]
    }

    pub fn check(&self) -> Result<(), String> {
        if !(1000..=300_000).contains(&self.session_timeout_ms) {
            return Err(format!("session_timeout_ms = {}: use 1000..=300000", self.session_timeout_ms));
        }
        Ok(())
    }
}

/// What a stage process reports of itself on `vigil.members` (keyed
/// `group/member`, compacted): which partitions it owns now. The embedded
/// broker cannot describe its groups, so `vigil topics` shows the groups
/// from these reports.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemberReport {
    pub group: String,
    pub member: String,
    pub stage: String,
    pub topic: String,
    pub partitions: Vec<i32>,
    /// When it was written (ms since the epoch); a process refreshes its
    /// report every `MEMBER_REPORT_INTERVAL` and when its partitions change.
    pub at_ms: i64,
}

/// How often a stage process refreshes its report (and looks at the
/// others'); three missed in a row and it no longer counts as alive.
pub const MEMBER_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

impl MemberReport {
    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.member)
    }

    /// Whether the process reported recently enough to count as alive.
    pub fn fresh(&self, now_ms: i64) -> bool {
        now_ms - self.at_ms <= 3 * MEMBER_REPORT_INTERVAL.as_millis() as i64
    }
}

/// What the live members of `group` on `topic` say they own, seen by
/// `member`: the partitions of `0..partitions` nobody owns, and whether
/// `member` is the one that should act on that (the first live member by
/// name, so that one process rejoins, not all).
///
/// Why: tansu 0.6 keeps a dead group leader's partitions assigned to it
/// after the group re-forms (docs/groups.md); nothing in the protocol tells
/// the survivors, so they find out from each other's reports.
pub fn unowned(
    reports: &[MemberReport],
    group: &str,
    topic: &str,
    partitions: i32,
    member: &str,
    now_ms: i64,
) -> (Vec<i32>, bool) {
    let live: Vec<&MemberReport> =
        reports.iter().filter(|r| r.group == group && r.topic == topic && r.fresh(now_ms)).collect();
    let owned: std::collections::BTreeSet<i32> = live.iter().flat_map(|r| r.partitions.iter().copied()).collect();
    let unowned = (0..partitions).filter(|p| !owned.contains(p)).collect();
    let first = live.iter().map(|r| r.member.as_str()).min().is_some_and(|m| m == member);
    (unowned, first)
}

/// The newest report of every member ever seen (blocking: call off the
/// runtime).
pub fn read_members(
    kafka: &crate::KafkaConfig,
    partitions: i32,
    timeout: std::time::Duration,
) -> Result<Vec<MemberReport>, crate::Error> {
    use rdkafka::Message;
    let mut latest = std::collections::BTreeMap::new();
    let range = crate::range::Range::all(crate::topics::MEMBERS, crate::Delivery::LastValue, partitions, timeout);
    crate::range::read(kafka, &range, |m| {
        if let Some(r) = m.payload().and_then(|p| serde_json::from_slice::<MemberReport>(p).ok()) {
            latest.insert(r.key(), r);
        }
    })?;
    Ok(latest.into_values().collect())
}

/// Where the rebalance callback puts what librdkafka announced, for the
/// reader's owner to take in order.
pub(crate) struct Rebalances {
    pub(crate) tx: tokio::sync::mpsc::UnboundedSender<Rebalance>,
    /// The reader is being dropped: librdkafka's close revokes everything
    /// and waits for the unassign, which the callback then does itself
    /// (the owner has already checkpointed).
    closing: AtomicBool,
}

impl Rebalances {
    pub(crate) fn new() -> (Self, tokio::sync::mpsc::UnboundedReceiver<Rebalance>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Rebalances { tx, closing: AtomicBool::new(false) }, rx)
    }

    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_no_live_member_reports_are_unowned() {
        let r = |member: &str, partitions: Vec<i32>, at_ms: i64| MemberReport {
            group: "g".into(),
            member: member.into(),
            stage: "s".into(),
            topic: "t".into(),
            partitions,
            at_ms,
        };
        let now = 100_000;
        let reports = vec![
            r("b", vec![2, 3], now - 1000),
            // Dead: its last report is older than three intervals.
            r("a", vec![0, 1], now - 7000),
            // Another group's member counts for nothing here.
            MemberReport { group: "other".into(), ..r("0", vec![0, 1], now) },
        ];
        assert_eq!(unowned(&reports, "g", "t", 4, "b", now), (vec![0, 1], true));
        assert_eq!(unowned(&reports, "g", "t", 4, "c", now), (vec![0, 1], false), "c is not b");
        let healed = vec![r("b", vec![0, 1, 2, 3], now)];
        assert_eq!(unowned(&healed, "g", "t", 4, "b", now), (vec![], true));
    }

    #[test]
    fn assignors_parse_and_name() {
        for a in [Assignor::Range, Assignor::RoundRobin, Assignor::CooperativeSticky] {
            assert_eq!(Assignor::parse(a.name()), Ok(a));
        }
        assert!(Assignor::parse("sticky").unwrap_err().contains("range"));
        let s = GroupSettings::default().consumer_settings();
        assert!(s.contains(&("heartbeat.interval.ms", "2000".into())));
        assert!(GroupSettings { session_timeout_ms: 10, ..Default::default() }.check().is_err());
    }
}
