//! Sessions with cameras that want Digest credentials or speak https: test
//! cameras on 127.0.0.1 that check the Digest answer themselves (RFC 7616,
//! with `md-5`/`sha2`, not through `http-auth`), and rustls servers with
//! certificates made by the `openssl` command.

use super::*;
use md5::{Digest, Md5};
use sha2::Sha256;
use std::collections::HashMap;

const REALM: &str = "vigil-test";

/// `key=value` and `key="value"` pairs of an `Authorization: Digest` line.
fn digest_params(request: &str) -> Option<HashMap<String, String>> {
    let line = request.lines().find(|l| l.starts_with("Authorization: Digest "))?.trim_end();
    let mut out = HashMap::new();
    let mut rest = &line["Authorization: Digest ".len()..];
    while let Some((k, v)) = rest.split_once('=') {
        let (value, next) = match v.strip_prefix('"') {
            Some(q) => q.split_once('"').map(|(a, b)| (a, b.trim_start_matches([',', ' '])))?,
            None => v.split_once(", ").unwrap_or((v, "")),
        };
        out.insert(k.trim().to_string(), value.to_string());
        rest = next;
    }
    Some(out)
}

fn hash(algorithm: &str, text: &str) -> String {
    match algorithm {
        "MD5" => format!("{:x}", Md5::digest(text.as_bytes())),
        "SHA-256" => format!("{:x}", Sha256::digest(text.as_bytes())),
        other => panic!("{other}"),
    }
}

/// The request's Digest answer is right for this user, password and nonce:
/// its `nc` if so.
fn digest_ok(request: &str, algorithm: &str, user: &str, password: &str, nonce: &str) -> Option<String> {
    let p = digest_params(request)?;
    let uri = request.split(' ').nth(1)?;
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    let fields = [("username", user), ("realm", REALM), ("nonce", nonce), ("uri", uri), ("qop", "auth")];
    if fields.iter().any(|&(k, want)| get(k) != want) || get("algorithm") != algorithm || get("opaque") != "op" {
        return None;
    }
    let ha1 = hash(algorithm, &format!("{user}:{REALM}:{password}"));
    let ha2 = hash(algorithm, &format!("GET:{uri}"));
    let want = hash(algorithm, &format!("{ha1}:{nonce}:{}:{}:auth:{ha2}", get("nc"), get("cnonce")));
    (get("response") == want && get("cnonce").len() >= 8).then(|| get("nc").to_string())
}

/// A camera that wants Digest (`algorithm`) for admin/`password`, offering
/// Basic too (first, so the client must prefer Digest itself). Its nonce
/// changes after every `renew` accepted requests, announced as stale.
/// Answers accepted requests with `ok(accepted so far, socket)`.
fn digest_camera(
    algorithm: &'static str,
    password: &'static str,
    renew: usize,
    ok: impl Fn(usize, &mut dyn Write) + Send + 'static,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let state = Mutex::new((0usize, 0usize)); // (accepted, nonce number)
    serve(move |_, req, s| {
        let mut st = state.lock().unwrap();
        let nonce = format!("nonce{}", st.1);
        if digest_ok(req, algorithm, "admin", password, &nonce).is_some() {
            st.0 += 1;
            let accepted = st.0;
            if accepted.is_multiple_of(renew) {
                st.1 += 1; // the next request finds the nonce expired
            }
            drop(st);
            return ok(accepted - 1, s);
        }
        let stale = if req.contains(&format!("nonce=\"nonce{}\"", st.1.saturating_sub(1))) && st.1 > 0 {
            ", stale=true"
        } else {
            ""
        };
        let _ = write!(
            s,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"{REALM}\"\r\n\
             WWW-Authenticate: Digest realm=\"{REALM}\", qop=\"auth,auth-int\", algorithm={algorithm}, \
             nonce=\"{nonce}\", opaque=\"op\"{stale}\r\nContent-Length: 0\r\n\r\n"
        );
    })
}

#[test]
fn digest_mjpeg_streams_md5_and_sha256() {
    for algorithm in ["MD5", "SHA-256"] {
        let (port, requests) = digest_camera(algorithm, "s3cret", 100, |_, s| {
            multipart(s, &stream(&[image(1), image(2), image(3)], "--b", "\r\n", true));
        });
        let (frames, r, _) =
            session_for(&format!("http://admin:s3cret@127.0.0.1:{port}/mjpeg?ch=1"), Duration::from_secs(5));
        let e = r.unwrap_err().to_string();
        assert!(frames.len() == 3 && e.contains("closed the connection"), "{algorithm}: {} frames, {e}", frames.len());
        let requests = requests.lock().unwrap();
        assert_eq!(requests.len(), 2, "{algorithm}: asked once, answered once");
        assert!(!requests[0].contains("Authorization"), "nothing before the camera asks");
        assert!(requests[1].contains(&format!("algorithm={algorithm}")) && requests[1].contains("uri=\"/mjpeg?ch=1\""));
        let basic = b64(b"admin:s3cret");
        assert!(requests.iter().all(|r| !r.contains("s3cret") && !r.contains(&basic)), "{requests:?}");
    }
}

#[test]
fn digest_snapshots_reuse_the_nonce_and_follow_a_stale_one() {
    let (port, requests) = digest_camera("MD5", "pw", 3, |n, s| jpeg_response(s, n as u8));
    // Credentials from the environment (as `session` reads it), none in the URL.
    let cfg = HttpConfig::parse(&format!("http://127.0.0.1:{port}/snap.jpg#poll=0.1")).unwrap();
    let env = |name: &str| match name {
        "VIGIL_HTTP_USER_T" => Some("admin".to_string()),
        "VIGIL_HTTP_PASSWORD" => Some("pw".to_string()),
        _ => None,
    };
    let creds = credentials::lookup(ENV_PREFIX, "t", None, None, env);
    let (frames, r, _) = session_with(&cfg, creds, Duration::from_millis(750));
    assert!(r.is_ok(), "{r:?}");
    assert!((5..=9).contains(&frames.len()), "{} frames", frames.len());
    assert!(frames.iter().enumerate().all(|(i, f)| f.data == image(i as u8)));
    let requests = requests.lock().unwrap();
    let ncs: Vec<String> = requests
        .iter()
        .map(|r| digest_params(r).map(|p| format!("{}/{}", p["nonce"], p["nc"])).unwrap_or_default())
        .collect();
    // Asked once; three answers on the first nonce; the fourth finds it
    // stale and goes again on the new one, counting from 1.
    let want = ["", "nonce0/00000001", "nonce0/00000002", "nonce0/00000003", "nonce0/00000004", "nonce1/00000001"];
    assert_eq!(&ncs[..6], &want, "{ncs:?}");
    assert!(!requests[5].contains("Basic"));
}

#[test]
fn a_wrong_password_is_a_clear_error_that_never_shows_it() {
    let (port, requests) = digest_camera("MD5", "s3cret", 100, |_, s| jpeg_response(s, 1));
    let (frames, r, took) =
        session_for(&format!("http://admin:hunter2@127.0.0.1:{port}/snap.jpg"), Duration::from_secs(5));
    let e = r.unwrap_err();
    assert!(matches!(&e, SourceError::Connect(_)) && frames.is_empty() && took < Duration::from_secs(1), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("authentication failed (HTTP 401 Unauthorized)"), "{e}");
    assert!(e.contains("refused user `admin`") && e.contains("Digest MD5") && !e.contains("hunter2"), "{e}");
    assert_eq!(requests.lock().unwrap().len(), 2, "no retry loop");
    // Without credentials: where to put them.
    let (_, r, _) = session_for(&format!("http://127.0.0.1:{port}/snap.jpg"), Duration::from_secs(5));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("wants credentials") && e.contains("VIGIL_HTTP_USER"), "{e}");
    // Under the supervisor: the log says why, never the password.
    logs();
    let spec = SourceSpec::parse(&format!("http://admin:hunter2@127.0.0.1:{port}/snap.jpg")).unwrap();
    assert!(run_for(spec, Duration::from_millis(800)).is_empty());
    let logs = logs();
    assert!(logs.contains(&format!("127.0.0.1:{port}/snap.jpg: authentication failed")), "{logs}");
    assert!(!logs.contains("hunter2") && !logs.contains(&b64(b"admin:hunter2")), "{logs}");
}

#[test]
fn a_camera_that_echoes_a_basic_password_is_scrubbed() {
    let (port, _) = serve(|_, req, s| {
        let echo = req.lines().find(|l| l.starts_with("Authorization")).unwrap_or("");
        let _ = write!(s, "HTTP/1.1 401 hunter2 {echo}\r\nWWW-Authenticate: Basic realm=x\r\n\r\n");
    });
    let (_, r, _) = session_for(&format!("http://u:hunter2@127.0.0.1:{port}/x"), Duration::from_secs(5));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("authentication failed") && e.contains("<redacted>") && !e.contains("hunter2"), "{e}");
}

/// Certificates made by `openssl` once per test run: a self-signed one (as
/// `openssl req -x509` makes it: marked CA) for 127.0.0.1, and a CA with a
/// leaf it signed for 127.0.0.1.
struct Certs {
    dir: PathBuf,
}

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vigil-http-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &str| {
            let out = Command::new("openssl").args(args.split(' ')).current_dir(&dir).output().expect("openssl");
            assert!(out.status.success(), "openssl {args}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2";
        openssl(&format!(
            "req -x509 {ec} -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 -keyout self.key -out self.pem"
        ));
        openssl(&format!("req -x509 {ec} -subj /CN=vigil-test-ca -keyout ca.key -out ca.pem"));
        openssl(&format!("req {ec} -subj /CN=camera -keyout leaf.key -out leaf.csr"));
        std::fs::write(dir.join("leaf.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
        openssl(
            "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile leaf.ext -out leaf.pem",
        );
        Certs { dir }
    })
}

impl Certs {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A TLS server configuration with `name`.pem and `name`.key.
    fn server(&self, name: &str) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<_> =
            CertificateDer::pem_file_iter(self.path(&format!("{name}.pem"))).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let c = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(c)
    }
}

fn spec(port: u16, path: &str, options: &str) -> String {
    format!("https://127.0.0.1:{port}{path}#timeout=2{options}")
}

#[test]
fn https_snapshots_with_the_cameras_own_certificate_and_basic() {
    let c = certs();
    let (port, requests) = serve_on(Some(c.server("self")), |n, req, s| {
        if n == 0 {
            let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n");
        } else if req.contains(&format!("Authorization: Basic {}\r\n", b64(b"me:pw"))) {
            jpeg_response(s, n as u8);
        }
    });
    let ca = format!(",poll=0.1,ca={}", c.path("self.pem").display());
    let (frames, r, _) =
        session_for(&spec(port, "/snap.jpg", &ca).replace("https://", "https://me:pw@"), Duration::from_millis(500));
    assert!(r.is_ok() && frames.len() >= 3, "{r:?}, {} frames", frames.len());
    assert!(frames.iter().enumerate().all(|(i, f)| f.data == image(i as u8 + 1)));
    assert!(requests.lock().unwrap()[0].starts_with("GET /snap.jpg HTTP/1.1\r\nHost: 127.0.0.1:"));
}

#[test]
fn https_streams_through_a_ca_and_refuse_unknown_certificates() {
    let c = certs();
    let camera = |name: &str| {
        serve_on(Some(c.server(name)), |_, _, s| multipart(s, &stream(&[image(1), image(2)], "--b", "\r\n", true))).0
    };
    // Signed by a CA in the file: the usual checks pass.
    let ca = format!(",ca={}", c.path("ca.pem").display());
    let (frames, r, _) = session_for(&spec(camera("leaf"), "/m", &ca), Duration::from_secs(5));
    let e = r.unwrap_err().to_string();
    assert!(frames.len() == 2 && e.contains("closed the connection"), "{} frames, {e}", frames.len());
    // Without the file: a clear refusal, and what to do.
    for (name, options) in [("self", String::new()), ("leaf", String::new()), ("self", ca.clone())] {
        let (frames, r, took) = session_for(&spec(camera(name), "/m", &options), Duration::from_secs(5));
        let e = r.unwrap_err();
        eprintln!("{name} {options}: {e}");
        assert!(matches!(&e, SourceError::Connect(_)) && frames.is_empty() && took < Duration::from_secs(1), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("certificate is not trusted") && e.contains("#ca=") && e.contains("#insecure"), "{e}");
    }
    // #insecure: anything goes, and the log says so.
    logs();
    let (frames, r, _) = session_for(&spec(camera("self"), "/m", ",insecure"), Duration::from_secs(5));
    assert!(frames.len() == 2 && r.unwrap_err().to_string().contains("closed the connection"));
    assert!(logs().contains("https camera with #insecure"), "{}", logs());
}

#[test]
fn https_errors_are_clear() {
    let c = certs();
    let fails = |spec: &str, says: &str| {
        let (_, r, took) = session_for(spec, Duration::from_secs(5));
        let e = r.unwrap_err().to_string();
        assert!(e.contains(says) && took < Duration::from_secs(1), "{spec}: {e} ({took:?})");
    };
    let (port, _) = serve_on(Some(c.server("self")), |n, _, s| jpeg_response(s, n as u8));
    fails(&spec(port, "/x", ",ca=/no/such/ca.pem"), "cannot read the CA file `/no/such/ca.pem` (#ca=): No such file");
    let not_pem = c.path("leaf.ext");
    fails(&spec(port, "/x", &format!(",ca={}", not_pem.display())), "holds no certificate");
    // A plain HTTP camera on the https URL: it answers the TLS hello at once.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    fails(&spec(plain, "/x", ""), "does the camera speak https on this port?");
    // A server that accepts and says nothing: the handshake is bounded.
    let (silent, _) = serve(|_, _, _| std::thread::sleep(Duration::from_secs(3)));
    let (_, r, took) = session_for(&format!("https://127.0.0.1:{silent}/x#timeout=0.5"), Duration::from_secs(5));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("no TLS handshake within") && took < Duration::from_millis(900), "{e} {took:?}");
}
