//! `vigil submit`: a file goes to vigil.video.chunks in chunks that put it
//! back together byte-exact, read straight from the broker; bad arguments
//! are one-line errors.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn a_submitted_file_reassembles_from_the_topic() {
    let dir = temp_dir("submit");
    let addr = free_port();
    let listen = addr.to_string();
    let bdir = dir.join("b");
    let _broker = Vigil::start(
        "broker",
        &["broker", "--listen", &listen, "--data-dir", bdir.to_str().unwrap(), "--metrics-listen", "off"],
        &dir,
    );
    wait_port(addr, Duration::from_secs(30));
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let file = dir.join("clip.mp4");
    std::fs::write(&file, &bytes).unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) =
        vigil(&["submit", "--brokers", &listen, "--metrics-listen", "off", "--chunk-bytes", "20000", "--json", f]);
    assert_eq!(code, 0, "{err}");
    let sent: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = sent[0]["video_id"].as_str().unwrap().to_string();
    assert_eq!(id, jobs::sha256_hex(&bytes), "the id is the content hash");
    assert_eq!(sent[0]["chunks"], 15);
    assert!(err.contains("15/15 chunks (100%)"), "progress: {err}");

    let spec = bus::topics::plan().into_iter().find(|t| t.name == bus::topics::VIDEO_CHUNKS).unwrap();
    let range = bus::range::Range::all(spec.name, spec.delivery, spec.partitions, Duration::from_secs(20));
    let mut chunks = Vec::new();
    bus::range::read(&kafka(addr), &range, |m| {
        use rdkafka::Message;
        chunks.push(jobs::Chunk::decode(m.payload().unwrap()).unwrap());
    })
    .unwrap();
    assert_eq!(chunks.len(), 15, "each chunk once");
    let mut a = jobs::Assembly::new(&chunks[0].meta, 1 << 20, &dir.join("spill")).unwrap();
    for c in &chunks {
        assert_eq!(c.meta.video_id, id);
        a.add(c).unwrap();
    }
    let jobs::Whole::Memory(back) = a.finish().unwrap() else { panic!("fits in memory") };
    assert_eq!(back, bytes);

    // The same content again is the same video; --force makes a new one.
    let submit = |force: bool| {
        let mut args = vec!["submit", "--brokers", &listen, "--metrics-listen", "off", "--chunk-bytes", "200000"];
        args.extend(force.then_some("--force"));
        args.push(f);
        let (code, out, err) = vigil(&args);
        assert_eq!(code, 0, "{err}");
        out.trim().to_string()
    };
    assert_eq!(submit(false), id, "the same content, the same video id");
    let forced = submit(true);
    assert!(forced != id && forced.starts_with(&format!("{id}-")), "--force: a new id, {forced}");

    for (args, why) in [
        (vec!["submit", "--brokers", &listen, "--metrics-listen", "off", "/no/such.mp4"], "not a file"),
        (
            vec!["submit", "--brokers", &listen, "--metrics-listen", "off", "--chunk-bytes", "999999999", f],
            "--chunk-bytes",
        ),
        (vec!["submit", "--brokers", &listen, "--metrics-listen", "off", "--id", "x", f, f], "--id names one video"),
    ] {
        let (code, _, err) = vigil(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
