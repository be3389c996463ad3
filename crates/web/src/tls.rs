//! HTTPS: rustls (ring) in front of the same router.

use crate::Error;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

fn config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, Error> {
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| Error::Tls(format!("certificate {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("certificate {}: no certificate in the file", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| Error::Tls(format!("key {}: {e}", key.display())))?;
    let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(format!("certificate and key do not fit: {e}")))?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(c)
}

pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, Error> {
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config(cert, key)?)))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept");
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let conn = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            if let Err(e) = conn {
                tracing::debug!(%peer, error = %e, "connection");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let ok = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl (scripts/setup installs it)")
            .success();
        assert!(ok);
        (cert, key)
    }

    #[tokio::test]
    async fn serves_https_and_explains_bad_files() {
        let dir = std::env::temp_dir().join(format!("vigil-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, k) = cert(&dir);
        // Bad input: clear errors naming the file.
        let e = acceptor(&dir.join("missing.pem"), &k).err().expect("missing cert").to_string();
        assert!(e.contains("missing.pem"), "{e}");
        let e = acceptor(&c, &c).err().expect("a certificate is not a key").to_string();
        assert!(e.contains("key"), "{e}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, acceptor(&c, &k).unwrap(), async {
            let _ = rx.await;
        }));
        let out = tokio::task::spawn_blocking(move || {
            let mut child = Command::new("openssl")
                .args(["s_client", "-quiet", "-connect", &addr.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("HTTP/1.0 200") && text.ends_with("ok\n"), "{text}");
        let _ = tx.send(());
        server.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
