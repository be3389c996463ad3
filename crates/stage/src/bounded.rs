//! A stage over a finite input: footage read back from the archive (which
//! outlives the topic's retention), a range of a topic. The same `Stage`
//! code as a live run, driven the same way (`assign`, `on_input`, `flush`,
//! `revoke`), without a group, checkpoints or transactions: a one-off run
//! that ends when its input is exhausted and every output is acknowledged.
//! Stages derive output ids from their inputs, so running it again
//! publishes only copies that consumers drop.

use crate::{Error, Output, Source, Stage};
use bus::KafkaConfig;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A finite input for `run_bounded`.
#[allow(async_fn_in_trait)]
pub trait Bounded {
    type Item;

    /// The next input; `None` once it is exhausted.
    async fn next(&mut self) -> Option<Result<Self::Item, Error>>;
}

/// Runs `stage` over every input of `inputs` as partition `partition`,
/// publishing to `outputs`; returns how many inputs it took once the stage
/// is flushed and every output acknowledged.
pub async fn run_bounded<S, B>(
    kafka: &KafkaConfig,
    outputs: Vec<String>,
    stage: &mut S,
    partition: i32,
    mut inputs: B,
) -> Result<u64, Error>
where
    S: Stage,
    B: Bounded<Item = <S::Source as Source>::Item>,
{
    let mut out = Output::new(kafka, outputs, None, Arc::new(AtomicBool::new(false)))?;
    stage.assign(partition, None).await?;
    let mut taken = 0;
    while let Some(input) = inputs.next().await {
        stage.on_input(input?, &mut out).await?;
        taken += 1;
    }
    stage.flush(&mut out).await?;
    while stage.work(&mut out).await? {}
    out.wait_delivered().await?;
    stage.revoke(partition);
    Ok(taken)
}
