//! The long-lived readers against the embedded broker: a `Table` follows a
//! compacted topic (updates and tombstones) without a consumer per look,
//! and an `Inspector` reports a group's lag with clients it keeps.

use bus::{Delivery, KafkaConfig, Metrics, TopicSpec};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
struct Row {
    n: u32,
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_follows_its_topic_and_the_inspector_reports_lag() {
    let dir = std::env::temp_dir().join(format!("vigil-readers-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let broker = broker::EmbeddedBroker::start(&broker::BrokerConfig {
        data_dir: dir.clone(),
        listen,
        maintenance_interval: Duration::from_secs(60),
    })
    .await
    .unwrap();
    let mut kafka = KafkaConfig::new(broker.addr().to_string());
    kafka.replication_factor = 1;
    let topic = TopicSpec {
        name: "readers-test.table",
        key: "key",
        content: "test",
        delivery: Delivery::LastValue,
        partitions: 1,
        retention_ms: None,
    };
    kafka.ensure_topics(std::slice::from_ref(&topic)).await.unwrap();
    let producer: FutureProducer = kafka.producer(Delivery::LastValue, 1024).unwrap();
    let send = |key: &'static str, payload: Option<&'static str>| {
        let producer = producer.clone();
        async move {
            let mut r = FutureRecord::<str, str>::to("readers-test.table").key(key);
            if let Some(p) = payload {
                r = r.payload(p);
            }
            producer.send(r, Duration::from_secs(10)).await.unwrap();
        }
    };
    send("a", Some(r#"{"n":1}"#)).await;
    send("b", Some(r#"{"n":2}"#)).await;
    send("c", Some("not json")).await;

    let metrics = Metrics::default();
    let table: bus::table::Table<Row> = bus::table::Table::start(&kafka, &topic, 1, &metrics).unwrap();
    until("the rows written before the table started", || table.rows() == [Row { n: 1 }, Row { n: 2 }]).await;
    send("a", Some(r#"{"n":3}"#)).await;
    send("b", None).await; // a tombstone deletes its key
    until("an update and a delete", || table.rows() == [Row { n: 3 }]).await;
    assert!(metrics.render().contains("vigil_table_unreadable_records_total{topic=\"readers-test.table\"} 1"));

    // Five records; a group that committed offset 2 lags by 3.
    let reader = bus::Reader::assign(
        &kafka,
        &TopicSpec { delivery: Delivery::ExactlyOnce, ..topic.clone() },
        "readers-test-group",
        &[(0, rdkafka::Offset::Beginning)].into(),
        &metrics,
    )
    .unwrap();
    reader.commit(0, 2).unwrap();
    let inspector = bus::inspect::Inspector::new(&kafka).unwrap();
    let plan = [topic.clone()];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (i, p) = (&inspector, &plan);
        let report = tokio::task::block_in_place(|| i.report(p, &["readers-test-group"])).unwrap();
        let lag = report[0].groups.iter().find(|g| g.group == "readers-test-group").map(|g| g.lag);
        if lag == Some(3) {
            assert_eq!(report[0].end_offsets, [5]);
            break;
        }
        assert!(Instant::now() < deadline, "lag {lag:?}, report {report:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(table);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
