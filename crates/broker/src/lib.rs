//! The embedded broker: tansu, a Kafka-compatible broker, on SQLite in the
//! data dir. It is what `vigil up` and `vigil broker` run when no external
//! brokers are configured. Nothing else in vigil depends on it: every role
//! talks to it over the Kafka protocol, exactly as to a real cluster.
//!
//! What it does and lacks (measured, see docs/measured.md): idempotent producers and
//! consumer groups work; Kafka transactions do not; retention is enforced by
//! its maintenance pass (only on topics that set `cleanup.policy=delete`);
//! DeleteRecords is not implemented, so vigil never sends it here.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::StorageContainer;
use url::Url;

/// The file in the data dir that tells other roles where the broker listens.
pub const ADDR_FILE: &str = "broker.addr";
const NODE_ID: i32 = 111;
const CLUSTER_ID: &str = "vigil";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "broker address {addr} is in use (another `vigil broker` or Kafka?): pick another with --broker-listen, or point vigil at it with --brokers"
    )]
    PortTaken { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("data dir {path} is not writable: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("embedded broker: {0}")]
    Tansu(String),
    #[error("embedded broker did not accept connections on {0} within 30 s")]
    NotReady(SocketAddr),
}

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// How often the broker deletes records past their topic's retention.
    pub maintenance_interval: Duration,
}

/// A running embedded broker; stops when dropped.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    addr_file: PathBuf,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl EmbeddedBroker {
    /// Starts the broker and waits until it accepts connections.
    pub async fn start(cfg: &BrokerConfig) -> Result<Self, Error> {
        let dir = &cfg.data_dir;
        check_writable(dir)?;
        // tansu logs a taken port and keeps running without a listener:
        // find out first, and fail clearly.
        match TcpListener::bind(cfg.listen) {
            Ok(l) => drop(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(Error::PortTaken { addr: cfg.listen }),
            Err(source) => return Err(Error::Listen { addr: cfg.listen, source }),
        }
        let storage = storage_url(&dir.join("broker.db"), cfg.maintenance_interval)?;
        let listener = Url::parse(&format!("tcp://{}", cfg.listen)).map_err(|e| Error::Tansu(e.to_string()))?;
        let broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(NODE_ID)
            .cluster_id(CLUSTER_ID)
            .incarnation_id(uuid::Uuid::now_v7())
            .advertised_listener(listener.clone())
            .otlp_endpoint_url(None)
            .schema_registry(None)
            .storage(storage)
            .listener(listener)
            .authentication(false)
            .tls_server_config(None)
            .silent(true)
            .build()
            .await
            .map_err(|e| Error::Tansu(format!("{e:?}")))?;
        let task = tokio::spawn(async move {
            let mut broker = broker;
            // `serve` rather than `main`: vigil owns signal handling.
            broker.serve(tokio::time::Instant::now()).await.map_err(|e| format!("{e:?}"))
        });
        wait_listening(cfg.listen).await?;
        let addr_file = dir.join(ADDR_FILE);
        std::fs::write(&addr_file, cfg.listen.to_string())
            .map_err(|source| Error::DataDir { path: dir.clone(), source })?;
        tracing::info!(addr = %cfg.listen, db = %dir.join("broker.db").display(), "embedded broker ready");
        Ok(EmbeddedBroker { addr: cfg.listen, addr_file, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resolves if the broker stops by itself (it never should while the
    /// process runs), with why. Await it once.
    pub async fn stopped(&mut self) -> String {
        match (&mut self.task).await {
            Ok(Ok(())) => "the embedded broker ended on its own".into(),
            Ok(Err(e)) => format!("the embedded broker failed: {e}"),
            Err(e) if e.is_panic() => "the embedded broker panicked (see the log above)".into(),
            Err(e) => format!("the embedded broker stopped: {e}"),
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.addr_file);
    }
}

/// The address a broker started for `data_dir` advertised, if one did.
pub fn discover(data_dir: &Path) -> Option<String> {
    let s = std::fs::read_to_string(data_dir.join(ADDR_FILE)).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn check_writable(dir: &Path) -> Result<(), Error> {
    let err = |source| Error::DataDir { path: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok").map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)
}

/// tansu joins the URL's path onto its working directory; a path that starts
/// with `//` makes that join yield the absolute path itself. `sqlite:/.//x`
/// is how a URL without a host spells the path `//x`.
fn storage_url(db: &Path, maintenance: Duration) -> Result<Url, Error> {
    let abs = std::path::absolute(db).map_err(|source| Error::DataDir { path: db.to_path_buf(), source })?;
    let text = abs.to_str().ok_or_else(|| Error::Tansu(format!("data dir {} is not UTF-8", abs.display())))?;
    let mut url = Url::parse(&format!("sqlite:/./{text}")).map_err(|e| Error::Tansu(e.to_string()))?;
    url.query_pairs_mut().append_pair("maintenance_interval", &format!("{}s", maintenance.as_secs().max(1)));
    if url.path() != format!("/{text}") {
        return Err(Error::Tansu(format!(
            "the embedded broker cannot store under {text}: use a data dir path without spaces or URL-special characters"
        )));
    }
    Ok(url)
}

async fn wait_listening(addr: SocketAddr) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::NotReady(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_url_keeps_absolute_paths() {
        let url = storage_url(Path::new("/tmp/vigil-x/broker.db"), Duration::from_secs(30)).unwrap();
        // What tansu does with it: cwd joined with the path minus one slash.
        let p = url.path().strip_prefix('/').unwrap();
        assert_eq!(PathBuf::from("/anywhere").join(p), PathBuf::from("/tmp/vigil-x/broker.db"));
        assert!(url.domain().is_none());
        assert!(url.query().unwrap().contains("maintenance_interval=30s"));
        // A path the URL would percent-encode is refused, not mangled.
        assert!(storage_url(Path::new("/tmp/a dir/broker.db"), Duration::from_secs(1)).is_err());
    }
}
