//! [`Digest`]: a validated `sha256:<hex>` content digest.
//!
//! Digests arrive from registries, manifests and users; all of them are
//! untrusted. The blob store builds file names from digests, so the only way to
//! get a [`Digest`] is through [`Digest::parse`] (which accepts exactly
//! `sha256:` followed by 64 lowercase hex digits) or by hashing bytes.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use super::OciError;

const PREFIX: &str = "sha256:";
const HEX_LEN: usize = 64;

/// A SHA-256 content digest, `sha256:<64 lowercase hex digits>`.
///
/// Other algorithms (`sha512:`), upper-case hex and any other spelling are
/// rejected: berth never builds a path from a string it has not validated.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Digest {
    /// The 64 hex digits, validated.
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    ///
    /// # Errors
    /// [`OciError::InvalidDigest`] for any other algorithm, length or character.
    pub fn parse(s: &str) -> Result<Self, OciError> {
        let invalid = |reason| OciError::InvalidDigest {
            digest: s.to_owned(),
            reason,
        };
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(invalid("expected `sha256:` followed by 64 hex digits"));
        };
        if algorithm != "sha256" {
            return Err(invalid("only sha256 digests are supported"));
        }
        if hex.len() != HEX_LEN {
            return Err(invalid("a sha256 digest has exactly 64 hex digits"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("a sha256 digest has only lowercase hex digits"));
        }
        Ok(Self {
            hex: hex.to_owned(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest of everything fed to `hasher`.
    pub(crate) fn from_hasher(hasher: Sha256) -> Self {
        Self {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// The 64 hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, for progress bars and logs.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = OciError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> Self {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn parses_and_prints_sha256() {
        let d = Digest::parse(HELLO).unwrap();
        assert_eq!(d.to_string(), HELLO);
        assert_eq!(d.hex(), &HELLO[7..]);
        assert_eq!(d.short(), "2cf24dba5fb0");
        assert_eq!(Digest::of(b"hello"), d);
        assert_eq!(HELLO.parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn rejects_everything_else() {
        let upper = HELLO.to_uppercase().replace("SHA256", "sha256");
        let cases = [
            "",
            "sha256",
            "sha256:",
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            &HELLO[..HELLO.len() - 1],
            &format!("{HELLO}0"),
            &upper,
            "sha512:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            "sha256:../../../../etc/passwd000000000000000000000000000000000000000000",
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b982/",
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b982g",
            " sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        ];
        for case in cases {
            let err = Digest::parse(case).unwrap_err();
            assert!(
                matches!(err, OciError::InvalidDigest { .. }),
                "{case:?}: {err}"
            );
            assert!(err.to_string().contains("invalid digest"), "{err}");
        }
    }

    #[test]
    fn serde_round_trip_validates() {
        let d = Digest::parse(HELLO).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{HELLO}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:abc\"").is_err());
    }
}
