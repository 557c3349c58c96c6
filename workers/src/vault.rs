//! Envelope encryption for stored secrets (webhook signing secrets; connection credentials later).
//!
//! Every secret is sealed under its own random 256-bit *data key* with AES-256-GCM, and the data
//! key is itself sealed ("wrapped") under a *key-encryption key* (KEK) from the [`Keyring`]. A
//! row stores a [`Sealed`]: the KEK's version, the wrapped data key and the ciphertext. The KEKs
//! never touch the database; they come from configuration (`v1:<base64>,v2:<base64>`), and
//! `switchyard dev` generates one into its data directory ([`Keyring::generate`]).
//!
//! Both layers authenticate the same associated data, an [`Aad`] naming the row the secret
//! belongs to: its workspace, its kind (`secret`, `connection`) and its name. A ciphertext copied
//! into another row, another workspace or another kind therefore fails to open, just like a
//! tampered, truncated or foreign one: someone with write access to the database can delete or
//! swap whole rows but cannot make one workspace's credential answer for another. Every such
//! failure is the one [`VaultError::Undecryptable`], which reveals nothing about which check
//! failed.
//!
//! Rotation while running: add a new, higher version to the keyring (`v1:…,v2:…`) and restart.
//! New seals use the highest version; old rows still open because their version is still
//! present. [`Keyring::rewrap`] then moves each row to the current KEK by re-wrapping only its
//! 60-byte data key, leaving the ciphertext untouched. Once no row names the old version, it can
//! be removed from the keyring.
//!
//! Nonces are random 96-bit values. Data keys are used once each; a KEK wraps one data key per
//! seal or rewrap, far below the 2³² random-nonce limit of AES-GCM for any plausible deployment.
//!
//! ```
//! use workers::vault::{Aad, Keyring, VaultError};
//!
//! # fn main() -> Result<(), VaultError> {
//! let keyring = Keyring::parse("v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
//! let aad = Aad::new(uuid::Uuid::nil(), "secret", "github-webhook");
//! let sealed = keyring.seal(&aad, b"whsec_...")?;
//! assert_eq!(keyring.open(&aad, &sealed)?.as_slice(), b"whsec_...");
//!
//! let elsewhere = Aad::new(uuid::Uuid::nil(), "secret", "stripe-webhook");
//! assert!(matches!(keyring.open(&elsewhere, &sealed), Err(VaultError::Undecryptable)));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Length of a key-encryption key and of a data key, in bytes.
pub const KEY_LEN: usize = 32;

/// Length of an AES-GCM tag, in bytes.
const TAG_LEN: usize = 16;

/// Length of a wrapped data key: nonce, encrypted key, tag.
const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// Domain label at the start of every [`Aad`] encoding; a new scheme gets a new label.
const AAD_LABEL: &[u8] = b"switchyard.vault.v1\0";

/// A 32-byte key, wiped from memory when dropped.
type Key = Zeroizing<[u8; KEY_LEN]>;

/// Why a key spec, a seal or an open failed. No variant carries key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The key spec is malformed; the message says what is wrong, never the key.
    #[error("bad key spec: {0}")]
    BadKeySpec(String),
    /// The secret was sealed under a key version the keyring does not hold.
    #[error("the secret is sealed with key v{0}, which is not in the configured keyring")]
    UnknownKeyVersion(u32),
    /// Authentication failed: wrong key, tampered or truncated bytes, or a row copied from elsewhere.
    #[error(
        "the secret cannot be decrypted with the configured keys, or was moved from another row"
    )]
    Undecryptable,
    /// The plaintext is beyond what AES-GCM can seal in one message (about 64 GiB).
    #[error("the secret is too large to seal")]
    PlaintextTooLarge,
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The row a sealed secret belongs to, authenticated (not encrypted) with it.
///
/// Encoded as the label `switchyard.vault.v1\0`, the workspace id's 16 bytes, then kind and name
/// each prefixed with its length as a big-endian `u64`, so no two different rows share an
/// encoding whatever bytes their names contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aad {
    workspace_id: uuid::Uuid,
    kind: String,
    name: String,
}

impl Aad {
    /// The row `name` of `kind` (`"secret"`, `"connection"`) in workspace `workspace_id`.
    pub fn new(workspace_id: uuid::Uuid, kind: &str, name: &str) -> Self {
        Self {
            workspace_id,
            kind: kind.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The unambiguous byte encoding both AES-GCM layers authenticate.
    fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(AAD_LABEL.len() + 16 + 16 + self.kind.len() + self.name.len());
        out.extend_from_slice(AAD_LABEL);
        out.extend_from_slice(self.workspace_id.as_bytes());
        for field in [&self.kind, &self.name] {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

/// A sealed secret as stored: safe to log, useless without the keyring and the same [`Aad`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Version of the key-encryption key that wrapped the data key.
    pub key_version: u32,
    /// `nonce (12) || AES-256-GCM(KEK, data key) || tag (16)`: 60 bytes.
    pub wrapped_key: Vec<u8>,
    /// `nonce (12) || AES-256-GCM(data key, plaintext) || tag (16)`.
    pub ciphertext: Vec<u8>,
}

/// The key-encryption keys by version; the highest version is current and wraps new data keys.
///
/// Keys are wiped from memory on drop; `Debug` shows versions only.
#[derive(Clone)]
pub struct Keyring {
    /// The highest version, kept apart so a keyring always has one.
    current_version: u32,
    /// The key of `current_version`.
    current: Key,
    /// Every lower version, kept to open and rewrap what they sealed.
    older: BTreeMap<u32, Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("versions", &self.versions())
            .field("current", &self.current_version())
            .finish()
    }
}

impl Keyring {
    /// Parses a key spec: one standard-base64 32-byte key (version 1), or a comma-separated list
    /// `v1:<base64>,v2:<base64>` with optional whitespace around items.
    ///
    /// Errors name the item and what is wrong with it, never the key's text.
    pub fn parse(spec: &str) -> Result<Self, VaultError> {
        let bad = VaultError::BadKeySpec;
        if spec.trim().is_empty() {
            return Err(bad("empty key spec".to_owned()));
        }
        let items: Vec<&str> = spec.split(',').map(str::trim).collect();
        if let [only] = items.as_slice()
            && !only.contains(':')
        {
            return Ok(Self::single(1, decode_key(1, only)?));
        }
        let mut keys = BTreeMap::new();
        for (index, item) in items.iter().enumerate() {
            let position = index + 1;
            if item.is_empty() {
                return Err(bad(format!(
                    "item {position} is empty; a key list is `v1:<base64>,v2:<base64>`"
                )));
            }
            let Some((label, key)) = item.split_once(':') else {
                return Err(bad(format!(
                    "item {position} has no version label; a key list is `v1:<base64>,v2:<base64>`"
                )));
            };
            let version = parse_version(label.trim()).ok_or_else(|| {
                bad(format!(
                    "{} is not a version label; labels are `v1`, `v2`, … (v1 or higher)",
                    describe_label(position, label.trim())
                ))
            })?;
            if keys.contains_key(&version) {
                return Err(bad(format!("duplicate version v{version}")));
            }
            keys.insert(version, decode_key(version, key.trim())?);
        }
        match keys.pop_last() {
            Some((current_version, current)) => Ok(Self {
                current_version,
                current,
                older: keys,
            }),
            // Unreachable: a non-blank spec has at least one item, and each item is a key or an error.
            None => Err(bad("empty key spec".to_owned())),
        }
    }

    /// A keyring of one key.
    fn single(version: u32, key: Key) -> Self {
        Self {
            current_version: version,
            current: key,
            older: BTreeMap::new(),
        }
    }

    /// A fresh random version-1 key, and its spec text (`v1:<base64>`) to store or configure.
    pub fn generate() -> Result<(Self, String), VaultError> {
        let key = random_key(&SystemRandom::new())?;
        let spec = format!("v1:{}", B64.encode(key.as_slice()));
        Ok((Self::single(1, key), spec))
    }

    /// The version new seals and rewraps use: the highest one.
    pub fn current_version(&self) -> u32 {
        self.current_version
    }

    /// Every version the keyring holds, ascending.
    pub fn versions(&self) -> Vec<u32> {
        let mut versions: Vec<u32> = self.older.keys().copied().collect();
        versions.push(self.current_version);
        versions
    }

    /// Seals `plaintext` for the row `aad` under a fresh data key wrapped by the current KEK.
    pub fn seal(&self, aad: &Aad, plaintext: &[u8]) -> Result<Sealed, VaultError> {
        let rng = SystemRandom::new();
        let aad = aad.encode();
        let data_key = random_key(&rng)?;
        let ciphertext = seal_with(&rng, &data_key, &aad, plaintext)?;
        let wrapped_key = seal_with(&rng, &self.current, &aad, data_key.as_slice())?;
        Ok(Sealed {
            key_version: self.current_version,
            wrapped_key,
            ciphertext,
        })
    }

    /// Opens a sealed secret of the row `aad`.
    ///
    /// [`VaultError::UnknownKeyVersion`] if its KEK is not in the keyring;
    /// [`VaultError::Undecryptable`] on any authentication failure.
    pub fn open(&self, aad: &Aad, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let aad = aad.encode();
        let data_key = self.unwrap_data_key(&aad, sealed)?;
        open_with(&data_key, &aad, &sealed.ciphertext)
    }

    /// Re-wraps the data key of a sealed secret under the current KEK, leaving its ciphertext
    /// unchanged: the step of a key rotation, one row at a time, while running.
    ///
    /// Authenticates the wrapped key against `aad` (so a moved row still fails) but does not
    /// decrypt the ciphertext. A row already at the current version gets a fresh wrap.
    pub fn rewrap(&self, aad: &Aad, sealed: &Sealed) -> Result<Sealed, VaultError> {
        let rng = SystemRandom::new();
        let aad = aad.encode();
        let data_key = self.unwrap_data_key(&aad, sealed)?;
        let wrapped_key = seal_with(&rng, &self.current, &aad, data_key.as_slice())?;
        Ok(Sealed {
            key_version: self.current_version,
            wrapped_key,
            ciphertext: sealed.ciphertext.clone(),
        })
    }

    /// The key of `version`, if the keyring holds it.
    fn key(&self, version: u32) -> Option<&Key> {
        if version == self.current_version {
            Some(&self.current)
        } else {
            self.older.get(&version)
        }
    }

    /// Opens the wrapped data key of `sealed` with the KEK of its version.
    fn unwrap_data_key(&self, aad: &[u8], sealed: &Sealed) -> Result<Key, VaultError> {
        let kek = self
            .key(sealed.key_version)
            .ok_or(VaultError::UnknownKeyVersion(sealed.key_version))?;
        if sealed.wrapped_key.len() != WRAPPED_LEN {
            return Err(VaultError::Undecryptable);
        }
        let plain = open_with(kek, aad, &sealed.wrapped_key)?;
        if plain.len() != KEY_LEN {
            return Err(VaultError::Undecryptable);
        }
        let mut data_key = Zeroizing::new([0; KEY_LEN]);
        data_key.copy_from_slice(&plain);
        Ok(data_key)
    }
}

/// `v<N>` with N a decimal `u32` of at least 1.
fn parse_version(label: &str) -> Option<u32> {
    let digits = label.strip_prefix('v')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|v| *v >= 1)
}

/// Names a bad label in an error: quoted when it is short and looks like a label, otherwise by
/// position only, since a label that is not one may be a pasted key.
fn describe_label(position: usize, label: &str) -> String {
    if label.starts_with('v') && label.len() <= 11 && label.is_ascii() {
        format!("`{label}` (item {position})")
    } else {
        format!("the label of item {position}")
    }
}

/// Decodes one key's base64 into 32 bytes; errors say which version, never the text.
fn decode_key(version: u32, text: &str) -> Result<Key, VaultError> {
    // The decoder's own error names the offending character and offset: a piece of the key.
    let bytes = Zeroizing::new(B64.decode(text).map_err(|_| {
        VaultError::BadKeySpec(format!(
            "key v{version} is not valid standard base64; a key is 32 bytes of base64"
        ))
    })?);
    if bytes.len() != KEY_LEN {
        return Err(VaultError::BadKeySpec(format!(
            "key v{version} is {} bytes; a key is 32 bytes of base64",
            bytes.len()
        )));
    }
    let mut key = Zeroizing::new([0; KEY_LEN]);
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// 32 random bytes from the system RNG.
fn random_key(rng: &SystemRandom) -> Result<Key, VaultError> {
    let mut key = Zeroizing::new([0; KEY_LEN]);
    rng.fill(key.as_mut_slice())
        .map_err(|_| VaultError::Random)?;
    Ok(key)
}

/// The AES-256-GCM key for `key`. ring refuses only a key of the wrong length, which the
/// type rules out; callers still map the error rather than panic.
fn aead_key(key: &[u8; KEY_LEN]) -> Result<LessSafeKey, ring::error::Unspecified> {
    UnboundKey::new(&AES_256_GCM, key).map(LessSafeKey::new)
}

/// `nonce || AES-256-GCM(key, plaintext, aad) || tag`, with a random nonce.
fn seal_with(
    rng: &SystemRandom,
    key: &[u8; KEY_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| VaultError::Random)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    // Sealing fails only for a plaintext beyond AES-GCM's per-message limit (the key cannot
    // be refused, see `aead_key`).
    let tag = aead_key(key)
        .and_then(|key| {
            key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
        })
        .map_err(|_| VaultError::PlaintextTooLarge)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens `nonce || ciphertext || tag`; any failure, including a short input, is `Undecryptable`.
fn open_with(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(VaultError::Undecryptable);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Undecryptable)?;
    // Decrypted in place inside a buffer that is wiped on drop, whether or not the tag verifies.
    let mut buf = Zeroizing::new(body.to_vec());
    let plain_len = aead_key(key)
        .and_then(|key| key.open_in_place(nonce, ring::aead::Aad::from(aad), buf.as_mut_slice()))
        .map_err(|_| VaultError::Undecryptable)?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    fn workspace() -> uuid::Uuid {
        uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)
    }

    fn aad() -> Aad {
        Aad::new(workspace(), "secret", "github")
    }

    fn v1() -> Keyring {
        Keyring::parse(&format!("v1:{KEY1}")).expect("v1 keyring")
    }

    fn v1_v2() -> Keyring {
        Keyring::parse(&format!("v1:{KEY1}, v2:{KEY2}")).expect("v1,v2 keyring")
    }

    fn v2_only() -> Keyring {
        Keyring::parse(&format!("v2:{KEY2}")).expect("v2 keyring")
    }

    fn spec_error(spec: &str) -> String {
        match Keyring::parse(spec) {
            Err(VaultError::BadKeySpec(why)) => why,
            other => panic!("expected BadKeySpec for {spec:?}, got {other:?}"),
        }
    }

    #[test]
    fn sealed_secret_opens_to_its_plaintext() {
        let keyring = v1();
        for plaintext in [&b""[..], b"x", b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
            let sealed = keyring.seal(&aad(), plaintext).unwrap();
            assert_eq!(sealed.key_version, 1);
            assert_eq!(sealed.wrapped_key.len(), WRAPPED_LEN);
            assert_eq!(
                sealed.ciphertext.len(),
                NONCE_LEN + plaintext.len() + TAG_LEN
            );
            assert_eq!(keyring.open(&aad(), &sealed).unwrap().as_slice(), plaintext);
        }
    }

    #[test]
    fn each_seal_uses_fresh_nonces_and_data_keys() {
        let keyring = v1();
        let a = keyring.seal(&aad(), b"same secret").unwrap();
        let b = keyring.seal(&aad(), b"same secret").unwrap();
        assert_ne!(a.wrapped_key, b.wrapped_key);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_ne!(a.ciphertext[..NONCE_LEN], b.ciphertext[..NONCE_LEN]);
        assert_ne!(a.ciphertext[NONCE_LEN..], b.ciphertext[NONCE_LEN..]);
    }

    #[test]
    fn a_secret_moved_to_another_row_does_not_open() {
        let keyring = v1();
        let sealed = keyring.seal(&aad(), b"s3cret").unwrap();
        let elsewhere = [
            Aad::new(uuid::Uuid::nil(), "secret", "github"),
            Aad::new(workspace(), "connection", "github"),
            Aad::new(workspace(), "secret", "github2"),
            Aad::new(workspace(), "secret", ""),
        ];
        for other in &elsewhere {
            assert_eq!(keyring.open(other, &sealed), Err(VaultError::Undecryptable));
            assert_eq!(
                keyring.rewrap(other, &sealed),
                Err(VaultError::Undecryptable)
            );
        }
    }

    #[test]
    fn aad_encoding_is_unambiguous() {
        let ws = workspace();
        let pairs = [
            (Aad::new(ws, "ab", "c"), Aad::new(ws, "a", "bc")),
            (Aad::new(ws, "a\0", "b"), Aad::new(ws, "a", "\0b")),
            (Aad::new(ws, "", "ab"), Aad::new(ws, "ab", "")),
        ];
        for (a, b) in &pairs {
            assert_ne!(a.encode(), b.encode(), "{a:?} and {b:?}");
        }
        let keyring = v1();
        let sealed = keyring.seal(&pairs[0].0, b"s").unwrap();
        assert_eq!(
            keyring.open(&pairs[0].1, &sealed),
            Err(VaultError::Undecryptable)
        );
    }

    #[test]
    fn flipping_any_byte_makes_it_undecryptable() {
        let keyring = v1();
        let sealed = keyring.seal(&aad(), b"a secret of some length").unwrap();
        for i in 0..sealed.wrapped_key.len() {
            for bit in [0x01, 0x80] {
                let mut bad = sealed.clone();
                bad.wrapped_key[i] ^= bit;
                assert_eq!(keyring.open(&aad(), &bad), Err(VaultError::Undecryptable));
                assert_eq!(keyring.rewrap(&aad(), &bad), Err(VaultError::Undecryptable));
            }
        }
        for i in 0..sealed.ciphertext.len() {
            for bit in [0x01, 0x80] {
                let mut bad = sealed.clone();
                bad.ciphertext[i] ^= bit;
                assert_eq!(keyring.open(&aad(), &bad), Err(VaultError::Undecryptable));
            }
        }
    }

    #[test]
    fn swapped_parts_of_two_secrets_do_not_open() {
        let keyring = v1();
        let a = keyring.seal(&aad(), b"first").unwrap();
        let b = keyring.seal(&aad(), b"second").unwrap();
        let mixed = Sealed {
            ciphertext: b.ciphertext.clone(),
            ..a.clone()
        };
        assert_eq!(keyring.open(&aad(), &mixed), Err(VaultError::Undecryptable));
    }

    #[test]
    fn truncated_or_extended_input_is_undecryptable() {
        let keyring = v1();
        let sealed = keyring.seal(&aad(), b"a secret").unwrap();
        for len in 0..sealed.wrapped_key.len() {
            let mut bad = sealed.clone();
            bad.wrapped_key.truncate(len);
            assert_eq!(keyring.open(&aad(), &bad), Err(VaultError::Undecryptable));
            assert_eq!(keyring.rewrap(&aad(), &bad), Err(VaultError::Undecryptable));
        }
        for len in 0..sealed.ciphertext.len() {
            let mut bad = sealed.clone();
            bad.ciphertext.truncate(len);
            assert_eq!(keyring.open(&aad(), &bad), Err(VaultError::Undecryptable));
        }
        let mut longer = sealed.clone();
        longer.wrapped_key.push(0);
        assert_eq!(
            keyring.open(&aad(), &longer),
            Err(VaultError::Undecryptable)
        );
        let mut longer = sealed;
        longer.ciphertext.push(0);
        assert_eq!(
            keyring.open(&aad(), &longer),
            Err(VaultError::Undecryptable)
        );
    }

    #[test]
    fn a_wrong_key_is_undecryptable_and_a_missing_version_is_named() {
        let sealed = v1().seal(&aad(), b"s").unwrap();
        let other = Keyring::parse(KEY2).unwrap();
        assert_eq!(other.open(&aad(), &sealed), Err(VaultError::Undecryptable));
        assert_eq!(
            v2_only().open(&aad(), &sealed),
            Err(VaultError::UnknownKeyVersion(1))
        );
        let relabelled = Sealed {
            key_version: 2,
            ..sealed
        };
        assert_eq!(
            v1_v2().open(&aad(), &relabelled),
            Err(VaultError::Undecryptable)
        );
    }

    #[test]
    fn rotation_rewraps_to_the_current_key_without_touching_the_ciphertext() {
        let old = v1().seal(&aad(), b"rotate me").unwrap();

        let both = v1_v2();
        assert_eq!(both.current_version(), 2);
        assert_eq!(both.open(&aad(), &old).unwrap().as_slice(), b"rotate me");
        let fresh = both.seal(&aad(), b"new").unwrap();
        assert_eq!(fresh.key_version, 2);

        let moved = both.rewrap(&aad(), &old).unwrap();
        assert_eq!(moved.key_version, 2);
        assert_eq!(moved.ciphertext, old.ciphertext);
        assert_ne!(moved.wrapped_key, old.wrapped_key);
        assert_eq!(both.open(&aad(), &moved).unwrap().as_slice(), b"rotate me");

        let v2 = v2_only();
        assert_eq!(v2.open(&aad(), &moved).unwrap().as_slice(), b"rotate me");
        assert_eq!(v2.open(&aad(), &old), Err(VaultError::UnknownKeyVersion(1)));
        assert_eq!(
            v2.rewrap(&aad(), &old),
            Err(VaultError::UnknownKeyVersion(1))
        );
    }

    #[test]
    fn a_single_key_is_version_one_and_lists_allow_whitespace() {
        let single = Keyring::parse(&format!("  {KEY1}\n")).unwrap();
        assert_eq!(single.versions(), vec![1]);
        let sealed = single.seal(&aad(), b"s").unwrap();
        assert_eq!(v1().open(&aad(), &sealed).unwrap().as_slice(), b"s");

        let list = Keyring::parse(&format!(" v2 : {KEY2} ,\tv1:{KEY1}\n")).unwrap();
        assert_eq!(list.versions(), vec![1, 2]);
        assert_eq!(list.current_version(), 2);
        let gaps = Keyring::parse(&format!("v3:{KEY1},v10:{KEY2}")).unwrap();
        assert_eq!(gaps.versions(), vec![3, 10]);
        assert_eq!(gaps.current_version(), 10);
    }

    #[test]
    fn generated_keyrings_work_and_reparse() {
        let (keyring, spec) = Keyring::generate().unwrap();
        assert_eq!(keyring.versions(), vec![1]);
        let sealed = keyring.seal(&aad(), b"s").unwrap();
        let reparsed = Keyring::parse(&spec).unwrap();
        assert_eq!(reparsed.open(&aad(), &sealed).unwrap().as_slice(), b"s");
        let (other, other_spec) = Keyring::generate().unwrap();
        assert_ne!(spec, other_spec);
        assert_eq!(other.open(&aad(), &sealed), Err(VaultError::Undecryptable));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let short = B64.encode([7u8; 31]);
        let cases = [
            ("", "empty key spec"),
            ("  \n", "empty key spec"),
            ("not base64!", "key v1 is not valid standard base64"),
            (
                &format!("v1:{KEY1},v2:{short}"),
                "key v2 is 31 bytes; a key is 32 bytes",
            ),
            (&B64.encode([7u8; 33]), "key v1 is 33 bytes"),
            (&format!("v1:{KEY1},v1:{KEY2}"), "duplicate version v1"),
            (
                &format!("vx:{KEY1}"),
                "`vx` (item 1) is not a version label",
            ),
            (
                &format!("v0:{KEY1}"),
                "`v0` (item 1) is not a version label",
            ),
            (
                &format!("1:{KEY1}"),
                "the label of item 1 is not a version label",
            ),
            (
                &format!("v-1:{KEY1}"),
                "`v-1` (item 1) is not a version label",
            ),
            (&format!("v99999999999:{KEY1}"), "is not a version label"),
            (&format!("v1:{KEY1},{KEY2}"), "item 2 has no version label"),
            (&format!("v1:{KEY1},"), "item 2 is empty"),
            ("v1:", "key v1 is 0 bytes"),
        ];
        for (spec, expected) in cases {
            let why = spec_error(spec);
            assert!(
                why.contains(expected),
                "{spec:?}: {why:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn spec_errors_never_show_key_text() {
        let short = B64.encode([0x5au8; 31]);
        let long = B64.encode([0x5au8; 40]);
        let invalid = format!("{}-", &KEY2[..KEY2.len() - 2]);
        let specs = [
            format!("v1:{KEY1},v2:{short}"),
            format!("v1:{KEY1},v2:{long}"),
            format!("v1:{KEY1},v2:{invalid}"),
            invalid.clone(),
            format!("v1:{KEY1},v1:{KEY2}"),
            format!("v1:{KEY1},{KEY2}"),
            format!("{KEY2}:{KEY1}"),
            format!("vx:{KEY1}"),
        ];
        for spec in &specs {
            let err = Keyring::parse(spec).unwrap_err();
            let shown = format!("{err} {err:?}");
            for key in [KEY1, KEY2, &short, &long, &invalid] {
                assert!(
                    !shown.contains(&key[..8]),
                    "{shown:?} shows part of {key:?}"
                );
            }
        }
    }

    #[test]
    fn debug_shows_versions_but_no_key_material() {
        let keyring = v1_v2();
        let shown = format!("{keyring:?} {keyring:#?}");
        assert!(shown.contains("versions: [1, 2]"), "{shown}");
        for key in [KEY1, KEY2] {
            assert!(!shown.contains(&key[..8]), "{shown}");
            let bytes = B64.decode(key).unwrap();
            assert!(!shown.contains(&format!("{:?}", &bytes[..4])), "{shown}");
        }
    }
}
