//! HTTP authentication for one camera session, without I/O.
//!
//! Nothing is sent until the camera answers `401`; then the request goes
//! again with the scheme its `WWW-Authenticate` asks for: Digest (RFC 7616 /
//! 2617: MD5 or SHA-256, `-sess` too, `qop=auth`, counting `nc`, a fresh
//! random `cnonce` each time; through `http-auth`, the crate retina already
//! uses for RTSP) when offered, else Basic. So a Digest camera never sees the
//! password, even base64-coded. The scheme is then kept for the session:
//! every later request (a polled snapshot) carries it at once, Digest
//! reusing the nonce with the next `nc`. A second `401` is a wrong password,
//! unless the camera says the nonce is stale or the credentials had worked
//! earlier in the session (a nonce that expired): those are answered once
//! more with the new challenge.

use super::b64;
use crate::source::credentials::Credentials;
use http_auth::digest::Algorithm;
use http_auth::{ChallengeParser, DigestClient, PasswordParams};

/// The scheme the camera asked for.
#[derive(Debug)]
enum Scheme {
    Basic,
    Digest(Box<DigestClient>),
}

/// The session's authentication state.
#[derive(Debug)]
pub(super) struct Auth {
    creds: Option<Credentials>,
    scheme: Option<Scheme>,
    /// A request with the current scheme got past authentication.
    accepted: bool,
}

impl Auth {
    pub(super) fn new(creds: Option<Credentials>) -> Self {
        Auth { creds, scheme: None, accepted: false }
    }

    pub(super) fn credentials(&self) -> Option<&Credentials> {
        self.creds.as_ref()
    }

    /// The scheme in use, for messages: `Basic`, `Digest MD5`, ...
    pub(super) fn scheme(&self) -> Option<String> {
        match &self.scheme {
            None => None,
            Some(Scheme::Basic) => Some("Basic".into()),
            Some(Scheme::Digest(d)) => {
                let algorithm = match d.algorithm() {
                    Algorithm::Md5 => "MD5",
                    Algorithm::Sha256 => "SHA-256",
                    Algorithm::Sha512Trunc256 => "SHA-512-256",
                    _ => "(another algorithm)",
                };
                Some(format!("Digest {algorithm}{}", if d.session() { "-sess" } else { "" }))
            }
        }
    }

    /// The `Authorization` value for `GET target`; `None` before the camera
    /// asked for one.
    pub(super) fn authorization(&mut self, target: &str) -> Result<Option<String>, String> {
        let (Some(creds), Some(scheme)) = (&self.creds, &mut self.scheme) else { return Ok(None) };
        match scheme {
            Scheme::Basic => {
                Ok(Some(format!("Basic {}", b64(format!("{}:{}", creds.user, creds.password).as_bytes()))))
            }
            Scheme::Digest(d) => {
                let p = PasswordParams {
                    username: &creds.user,
                    password: &creds.password,
                    uri: target,
                    method: "GET",
                    body: None, // qop=auth: the body is not part of the hash
                };
                d.respond(&p).map(Some).map_err(|e| format!("cannot answer the camera's Digest challenge: {e}"))
            }
        }
    }

    /// A request got past authentication.
    pub(super) fn accepted(&mut self) {
        self.accepted = self.scheme.is_some();
    }

    /// The camera answered `401` with `challenges` (its `WWW-Authenticate`
    /// values) to a request that carried credentials (`sent`) or not:
    /// whether to send it again. `Err` when the camera asks for something
    /// vigil cannot answer.
    pub(super) fn challenged(&mut self, challenges: &[String], sent: bool) -> Result<bool, String> {
        if self.creds.is_none() {
            return Ok(false);
        }
        let scheme = choose(challenges)?;
        let stale = matches!(&scheme, Scheme::Digest(d) if d.stale());
        let again = !sent || stale || self.accepted;
        (self.scheme, self.accepted) = (Some(scheme), false);
        Ok(again)
    }
}

/// Digest if any challenge offers it (the first the crate can answer), else
/// Basic; else why not.
fn choose(challenges: &[String]) -> Result<Scheme, String> {
    let (mut basic, mut other, mut digest_error) = (false, None, None);
    for value in challenges {
        let mut any = false;
        // Parsed up to the first syntax error: what came before it counts.
        for c in ChallengeParser::new(value).map_while(Result::ok) {
            any = true;
            if c.scheme.eq_ignore_ascii_case("Digest") {
                match DigestClient::try_from(&c) {
                    Ok(d) => return Ok(Scheme::Digest(Box::new(d))),
                    Err(e) => digest_error = digest_error.or(Some(e)),
                }
            } else if c.scheme.eq_ignore_ascii_case("Basic") {
                basic = true;
            } else {
                other = other.or_else(|| Some(c.scheme.to_string()));
            }
        }
        // `Basic` alone, or with parameters the parser refuses: still Basic.
        let word = value.split_ascii_whitespace().next().unwrap_or("");
        if !any && word.eq_ignore_ascii_case("basic") {
            basic = true;
        }
    }
    if basic {
        return Ok(Scheme::Basic);
    }
    let printable = |s: &str| s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(100).collect::<String>();
    Err(match (digest_error, other) {
        (Some(e), _) => format!("the camera's Digest challenge is unusable ({})", printable(&e)),
        (None, Some(s)) => {
            format!("the camera asks for `{}` authentication; vigil answers Basic and Digest", printable(&s))
        }
        (None, None) => "the camera asks for credentials without saying how (no usable WWW-Authenticate)".into(),
    })
}

/// Fuzzing: the challenge parser must never panic on what a camera sends.
#[cfg(any(test, feature = "fuzz"))]
pub(super) fn fuzz(text: &str) {
    let mut auth = Auth::new(Some(Credentials { user: "u".into(), password: "p".into() }));
    if auth.challenged(&[text.to_string()], false).is_ok() {
        let _ = auth.authorization("/x");
        let _ = auth.scheme();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(Some(Credentials { user: "Mufasa".into(), password: "Circle of Life".into() }))
    }

    #[test]
    fn digest_is_preferred_and_its_nonce_reused() {
        let mut a = auth();
        assert_eq!(a.authorization("/x").unwrap(), None, "nothing before a challenge");
        let offered = [
            "Basic realm=\"cam\"".to_string(),
            "Digest realm=\"cam\", qop=\"auth\", algorithm=SHA-256, nonce=\"n1\", opaque=\"o\"".to_string(),
        ];
        assert!(a.challenged(&offered, false).unwrap());
        assert_eq!(a.scheme().as_deref(), Some("Digest SHA-256"));
        let first = a.authorization("/video?x=1").unwrap().unwrap();
        assert!(first.starts_with("Digest username=\"Mufasa\", realm=\"cam\", uri=\"/video?x=1\", nonce=\"n1\""));
        assert!(first.contains("nc=00000001") && first.contains("qop=auth") && first.contains("opaque=\"o\""));
        assert!(!first.contains("Circle"), "{first}");
        a.accepted();
        assert!(a.authorization("/x").unwrap().unwrap().contains("nc=00000002"));
        // Refused after it had worked: a nonce that expired; once more.
        let again = ["Digest realm=\"cam\", nonce=\"n2\", qop=\"auth\"".to_string()];
        assert!(a.challenged(&again, true).unwrap());
        assert_eq!(a.scheme().as_deref(), Some("Digest MD5"));
        assert!(!a.challenged(&again, true).unwrap(), "refused right away: the password is wrong");
        let stale = ["Digest realm=\"cam\", nonce=\"n3\", stale=true".to_string()];
        assert!(a.challenged(&stale, true).unwrap(), "stale: not the password's fault");
    }

    #[test]
    fn basic_when_asked_and_clear_refusals() {
        let mut a = auth();
        for value in ["Basic realm=\"cam\"", "Basic", "basic realm=cam, charset=\"UTF-8\"", "BASIC realm=\"a\"b"] {
            assert!(a.challenged(&[value.to_string()], false).unwrap(), "{value}");
            assert_eq!(a.authorization("/").unwrap().unwrap(), "Basic TXVmYXNhOkNpcmNsZSBvZiBMaWZl", "{value}");
        }
        let e = |v: &str| auth().challenged(&[v.to_string()], false).unwrap_err();
        assert!(e("NTLM").contains("`NTLM` authentication"), "{}", e("NTLM"));
        assert!(e("Digest realm=\"cam\"").contains("Digest challenge is unusable"), "{}", e("Digest realm=x"));
        assert!(e("Digest realm=\"c\", nonce=\"n\", algorithm=SHA-1").contains("unusable"));
        assert!(auth().challenged(&[], false).unwrap_err().contains("without saying how"));
        // Without credentials there is nothing to answer with.
        assert!(!Auth::new(None).challenged(&["Basic realm=x".to_string()], false).unwrap());
    }
}
