//! TLS for `https://` cameras: rustls with the ring provider (the one `web`
//! already links), blocking, over the session's `TcpStream`.
//!
//! Trust: the system's roots (`rustls-native-certs`: Debian's
//! `/etc/ssl/certs`, read once per process), plus the certificates of the
//! source's `#ca=FILE` (PEM, or one DER certificate). A certificate in that
//! file is trusted two ways: as a CA (the usual checks: chain, name, dates),
//! and, when the camera presents exactly that certificate, as-is, so that a
//! camera's self-signed certificate (often marked CA, often for another name
//! than the address vigil uses) works by putting it in the file. `#insecure`
//! accepts any certificate; the session warns once.
//!
//! A handshake is bounded by the session's timeout and looks at the stop
//! flag every read poll, like the rest of the session.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme, StreamOwned};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A connection to the camera, plain or TLS.
pub(super) enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            // A camera that closes without a TLS close_notify has still
            // ended its body: every image is checked whole anyway.
            Conn::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// The client configuration for one session: read errors of the CA file are
/// the session's (the file may be fixed; the supervisor retries).
pub(super) fn config(ca: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned = match ca {
        Some(path) => read_certificates(path)?,
        None => Vec::new(),
    };
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    // A certificate that cannot be a trust anchor is still pinned.
    roots.add_parsable_certificates(pinned.iter().cloned());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().ok();
    let verifier = Verifier { webpki, pinned, insecure, algorithms: provider.signature_verification_algorithms };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificates in a PEM file (or a file holding one DER certificate).
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the CA file `{shown}` (#ca=): {e}"))?;
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(bytes)]);
    }
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the CA file `{shown}` (#ca=) is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("the CA file `{shown}` (#ca=) holds no certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

/// The system's trust roots, read once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            tracing::warn!(errors = ?found.errors, "no system TLS root certificates: https cameras need #ca= or #insecure");
        }
        found.certs
    })
}

/// The name the camera's certificate must carry: the URL's host.
pub(super) fn server_name(url: &url::Url) -> Result<ServerName<'static>, String> {
    let name = match url.host() {
        Some(url::Host::Domain(d)) => ServerName::try_from(d.to_string()).map_err(|e| e.to_string()),
        Some(url::Host::Ipv4(ip)) => Ok(ServerName::from(std::net::IpAddr::V4(ip))),
        Some(url::Host::Ipv6(ip)) => Ok(ServerName::from(std::net::IpAddr::V6(ip))),
        None => Err("no host".into()),
    };
    name.map_err(|e| format!("TLS: the host cannot be a certificate name ({e})"))
}

/// Runs the handshake over `tcp` (its read timeout set to the poll step)
/// within `limit`: the TLS connection, `None` if stopped meanwhile, else why
/// not.
pub(super) fn handshake(
    mut tcp: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    limit: Duration,
    stopping: &dyn Fn() -> bool,
) -> Result<Option<Conn>, String> {
    let deadline = Instant::now() + limit;
    let mut conn = ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(explain(&e)),
        }
        if stopping() {
            return Ok(None);
        }
        if conn.is_handshaking() && Instant::now() >= deadline {
            return Err(format!("no TLS handshake within {limit:?}"));
        }
    }
    Ok(Some(Conn::Tls(Box::new(StreamOwned::new(conn, tcp)))))
}

/// A failed handshake in words, with what to do about it.
fn explain(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(cert @ rustls::Error::InvalidCertificate(_)) => format!(
            "TLS handshake failed: the camera's certificate is not trusted ({cert}); trust it with \
             #ca=/path/to/its-cert-or-ca.pem, or skip the check with #insecure"
        ),
        Some(e @ (rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. })) => {
            format!("TLS handshake failed ({e}): does the camera speak https on this port?")
        }
        Some(e) => format!("TLS handshake failed: {e}"),
        None if e.kind() == ErrorKind::UnexpectedEof => {
            "TLS handshake failed: the camera closed the connection (does it speak https on this port?)".into()
        }
        None => format!("TLS handshake failed: {e}"),
    }
}

/// The system's and the CA file's roots, the file's certificates pinned, or
/// nothing checked (`insecure`).
#[derive(Debug)]
struct Verifier {
    /// `None` when there is no root at all.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    insecure: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

/// rustls' signature check for one TLS version.
type CheckSignature = fn(
    &[u8],
    &CertificateDer<'_>,
    &DigitallySignedStruct,
    &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error>;

impl Verifier {
    /// A handshake signature check, skipped with `#insecure`.
    fn signature(
        &self,
        check: CheckSignature,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.insecure {
            Ok(HandshakeSignatureValid::assertion())
        } else {
            check(message, cert, dss, &self.algorithms)
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure || self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(w) => w.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
            None => Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(rustls::crypto::verify_tls12_signature, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(rustls::crypto::verify_tls13_signature, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
