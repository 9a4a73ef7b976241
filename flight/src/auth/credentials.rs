//! Credentials: the one user a server accepts, and the `authorization` header values a client sends (Basic
//! credentials in the handshake, a bearer token on every other call).

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// The one user a server accepts when auth is on.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Compare without an early exit, so that timing does not reveal how much of a guess was right.
    pub fn matches(&self, user: &str, password: &str) -> bool {
        let u = constant_time_eq(self.user.as_bytes(), user.as_bytes());
        let p = constant_time_eq(self.password.as_bytes(), password.as_bytes());
        u & p
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Decode `user:password` from the value of an `authorization: Basic …` header. Padding is optional (ADBC's Go
/// driver sends none) and the URL-safe alphabet is accepted too.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let encoded: String = rest.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = STANDARD_LENIENT
        .decode(&encoded)
        .or_else(|_| URL_SAFE_LENIENT.decode(&encoded))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The token of an `authorization: Bearer …` header value.
pub fn parse_bearer(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace)?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_with_and_without_padding() {
        // "u:pw" encodes to "dTpwdw==".
        assert_eq!(
            parse_basic("Basic dTpwdw=="),
            Some(("u".into(), "pw".into()))
        );
        assert_eq!(parse_basic("Basic dTpwdw"), Some(("u".into(), "pw".into())));
        assert_eq!(
            parse_basic("basic   dTpwdw=="),
            Some(("u".into(), "pw".into()))
        );
        // A password may contain ':'.
        let enc = base64::engine::general_purpose::STANDARD.encode("alice:a:b");
        assert_eq!(
            parse_basic(&format!("Basic {enc}")),
            Some(("alice".into(), "a:b".into()))
        );
        // URL-safe alphabet.
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("é?>:~~~?");
        assert_eq!(
            parse_basic(&format!("Basic {enc}")),
            Some(("é?>".into(), "~~~?".into()))
        );
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic"), None);
        let enc = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert_eq!(parse_basic(&format!("Basic {enc}")), None);
    }

    #[test]
    fn bearer() {
        assert_eq!(parse_bearer("Bearer abc"), Some("abc"));
        assert_eq!(parse_bearer("bearer  abc "), Some("abc"));
        assert_eq!(parse_bearer("Basic abc"), None);
    }

    #[test]
    fn credentials_compare_fully() {
        let c = Credentials::new("alice", "secret");
        assert!(c.matches("alice", "secret"));
        assert!(!c.matches("alice", "secre"));
        assert!(!c.matches("alice", "secret2"));
        assert!(!c.matches("bob", "secret"));
        assert!(!c.matches("", ""));
        assert!(!format!("{c:?}").contains("secret"));
    }
}
