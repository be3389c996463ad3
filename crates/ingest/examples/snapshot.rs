//! Writes one synthetic-camera picture as a JPEG, to look at the scene:
//! `cargo run -p ingest --example snapshot -- out.jpg [frame-number]`.

use ingest::synthetic::{Encoder, SyntheticConfig, render};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "snapshot.jpg".into());
    let n: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(42);
    let cfg = SyntheticConfig::parse("width=640,height=360,codec=mjpeg,quality=85")?;
    let mut picture = Vec::new();
    render(cfg.width, cfg.height, n, 1_700_000_000_123_456, &mut picture);
    let jpeg = Encoder::new(&cfg)?.encode(&picture, cfg.width, cfg.height, false)?;
    std::fs::write(&out, jpeg.data)?;
    println!("wrote {out}");
    Ok(())
}
