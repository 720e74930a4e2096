//! Ed25519 keys as files and text. A signing key file holds one line,
//! `contract-ledger-ed25519-secret-key <64 hex digits of the seed>`, and is created mode 0600; a
//! public key is 64 hex digits (given as text or as a file holding them). A key's id is the first
//! 8 bytes of SHA-256 of the public key, hex.
//!
//! A key never appears in a message or an error: errors name the file, never its contents.

use std::io::Read;
use std::path::Path;

use crate::ProofError;

const SECRET_TAG: &str = "contract-ledger-ed25519-secret-key";

/// A signing key.
pub struct SigningKey(ed25519_dalek::SigningKey);

/// A public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(pub(crate) ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public().id())
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.hex())
    }
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    ledger::unhex(text).and_then(|b| <[u8; 32]>::try_from(b).ok())
}

impl SigningKey {
    /// A new key from the system's random source.
    ///
    /// # Errors
    /// When `/dev/urandom` cannot be read.
    pub fn generate() -> Result<SigningKey, ProofError> {
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut random| random.read_exact(&mut seed))
            .map_err(|e| ProofError::Key(format!("reading /dev/urandom: {e}")))?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Writes the key to a new file `path`, mode 0600 (never over an existing file).
    ///
    /// # Errors
    /// When the file exists or cannot be written.
    pub fn write_new(&self, path: &Path) -> Result<(), ProofError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| ProofError::Key(format!("creating {}: {e}", path.display())))?;
        writeln!(
            file,
            "{SECRET_TAG} {}",
            crate::hex(self.0.to_bytes().as_slice())
        )
        .and_then(|()| file.sync_all())
        .map_err(|e| ProofError::Key(format!("writing {}: {e}", path.display())))
    }

    /// Reads a key file.
    ///
    /// # Errors
    /// A file that cannot be read or is not a key file (its contents are never quoted).
    pub fn read(path: &Path) -> Result<SigningKey, ProofError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ProofError::Key(format!("reading the signing key {}: {e}", path.display()))
        })?;
        let seed = text
            .trim()
            .strip_prefix(SECRET_TAG)
            .and_then(parse_hex32)
            .ok_or_else(|| {
                ProofError::Key(format!(
                    "{} is not a signing key file (ledgerctl keygen writes one)",
                    path.display()
                ))
            })?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.0.sign(message).to_bytes()
    }
}

impl PublicKey {
    /// A public key from its 64 hex digits, or from a file holding them.
    ///
    /// # Errors
    /// Text that is neither.
    pub fn parse(text_or_path: &str) -> Result<PublicKey, ProofError> {
        let text = match parse_hex32(text_or_path) {
            Some(_) => text_or_path.to_owned(),
            None => std::fs::read_to_string(text_or_path).map_err(|_| {
                ProofError::Key(format!(
                    "{text_or_path:?} is neither a public key (64 hex digits) nor a file holding one"
                ))
            })?,
        };
        let bytes = parse_hex32(&text).ok_or_else(|| {
            ProofError::Key(format!(
                "{text_or_path} does not hold a public key (64 hex digits)"
            ))
        })?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| ProofError::Key("not an Ed25519 public key".into()))
    }

    /// 64 hex digits.
    pub fn hex(&self) -> String {
        crate::hex(self.0.as_bytes())
    }

    /// The key's id: the first 8 bytes of SHA-256 of the public key, hex.
    pub fn id(&self) -> String {
        crate::hex(&crate::sha256(self.0.as_bytes())[..8])
    }
}
