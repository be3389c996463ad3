//! `vigil topics`: the topic plan with live numbers from the broker.

use crate::config::Settings;
use anyhow::Result;

pub async fn run(s: Settings, json: bool) -> Result<()> {
    let (kafka, plan) = (s.kafka.clone(), s.plan.clone());
    let report =
        tokio::task::spawn_blocking(move || bus::inspect::report(&kafka, &plan, bus::topics::groups::WITH_LAG))
            .await??;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("brokers: {}", s.kafka.brokers);
    println!(
        "{:<20} {:<14} {:>5} {:>10} {:>10} {:>10}  consumer groups (lag)",
        "topic", "guarantee", "parts", "retention", "end", "held"
    );
    for t in report {
        let retention = match t.retention_ms {
            Some(ms) => human_ms(ms),
            None => "compact".into(),
        };
        let end: i64 = t.end_offsets.iter().sum();
        let groups = if t.groups.is_empty() {
            "-".to_string()
        } else {
            t.groups.iter().map(|g| format!("{} ({})", g.group, g.lag)).collect::<Vec<_>>().join(", ")
        };
        let parts = if t.exists { t.partitions.to_string() } else { "missing".into() };
        println!(
            "{:<20} {:<14} {:>5} {:>10} {:>10} {:>10}  {}",
            t.name, t.delivery, parts, retention, end, t.records, groups
        );
    }
    // Each stage group's members and their partitions, as the members
    // report them (the embedded broker cannot describe groups).
    let kafka = s.kafka.clone();
    let members =
        tokio::task::spawn_blocking(move || bus::group::read_members(&kafka, 1, std::time::Duration::from_secs(3)))
            .await?;
    match members {
        Ok(members) => print_groups(&members, bus::now_us() / 1000),
        Err(e) => println!("\nconsumer groups: cannot read {} ({e})", bus::topics::MEMBERS),
    }
    // Each camera's newest state, from the compacted vigil.cameras.
    let (kafka, plan) = (s.kafka.clone(), s.plan.clone());
    let partitions = plan.iter().find(|t| t.name == bus::topics::CAMERAS).map_or(1, |t| t.partitions);
    let states = tokio::task::spawn_blocking(move || {
        bus::cameras::read_all(&kafka, partitions, std::time::Duration::from_secs(3))
    })
    .await??;
    if !states.is_empty() {
        println!("\n{:<20} {:<6} {:<5} {:<24} {:>10}  last error", "camera", "stream", "state", "since", "reconnects");
        for c in states {
            let since = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(c.since_us.max(0) as u64),
            );
            let state = if c.up { "up" } else { "down" };
            println!(
                "{:<20} {:<6} {:<5} {:<24} {:>10}  {}",
                c.camera, c.stream, state, since, c.reconnects, c.last_error
            );
        }
    }
    Ok(())
}

/// Per group: its live members and how the partitions are spread.
fn print_groups(members: &[bus::group::MemberReport], now_ms: i64) {
    let live: Vec<&bus::group::MemberReport> =
        members.iter().filter(|m| m.fresh(now_ms) && !m.partitions.is_empty()).collect();
    if live.is_empty() {
        return;
    }
    println!("\n{:<20} {:<20} {:>7}  member: partitions", "group", "topic", "members");
    let mut groups: std::collections::BTreeMap<(&str, &str), Vec<&bus::group::MemberReport>> = Default::default();
    for m in live {
        groups.entry((m.group.as_str(), m.topic.as_str())).or_default().push(m);
    }
    for ((group, topic), ms) in groups {
        let spread: Vec<String> = ms.iter().map(|m| format!("{}: {:?}", m.member, m.partitions)).collect();
        println!("{group:<20} {topic:<20} {:>7}  {}", ms.len(), spread.join("; "));
    }
}

fn human_ms(ms: i64) -> String {
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}
