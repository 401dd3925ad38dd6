//! Ephemeral ed25519 key pairs, made in memory for one machine.

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{LineEnding, PrivateKey};
use solstice_core::Secret;
use zeroize::Zeroize;

/// A key pair could not be made or encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The operating system's random source failed.
    #[error("the system random source failed")]
    Random(#[source] getrandom::Error),
    /// The key could not be written in OpenSSH format.
    #[error("could not encode the key in OpenSSH format")]
    Encode(#[source] russh::keys::ssh_key::Error),
}

/// An ed25519 key pair that lives only in memory.
///
/// Used twice per machine: the job's client key (public half injected with cloud-init,
/// private half used by the SSH executor) and the machine's host key (private half given
/// to the guest in the seed, public half used to verify the server). The private key is
/// zeroised when the pair is dropped (`ssh_key` wipes its key material) and is never
/// written to disk by this crate, except into the guest's own seed.
#[derive(Clone)]
pub struct SshKeyPair {
    key: PrivateKey,
}

impl std::fmt::Debug for SshKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshKeyPair").field("public", &self.public_openssh()).finish_non_exhaustive()
    }
}

impl SshKeyPair {
    /// Makes a new key pair with `comment` on its public half.
    ///
    /// # Errors
    /// [`KeyError::Random`] when the system random source fails.
    pub fn generate(comment: &str) -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(KeyError::Random)?;
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        seed.zeroize();
        let mut key = PrivateKey::from(Ed25519Keypair::from(signing));
        key.set_comment(comment);
        Ok(Self { key })
    }

    /// The public half in OpenSSH format: `ssh-ed25519 AAAA… comment`.
    pub fn public_openssh(&self) -> String {
        self.key.public_key().to_openssh().unwrap_or_default()
    }

    /// The private half in OpenSSH PEM format, unencrypted.
    ///
    /// # Errors
    /// [`KeyError::Encode`] when encoding fails.
    pub fn private_openssh(&self) -> Result<Secret, KeyError> {
        let pem = self.key.to_openssh(LineEnding::LF).map_err(KeyError::Encode)?;
        Ok(Secret::new(pem.as_str()))
    }

    /// The key itself, for the SSH client.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_fresh_and_round_trip_through_openssh_format() {
        let a = SshKeyPair::generate("job-a").expect("key");
        let b = SshKeyPair::generate("job-b").expect("key");
        assert!(a.public_openssh().starts_with("ssh-ed25519 AAAA"));
        assert!(a.public_openssh().ends_with(" job-a"));
        assert_ne!(a.public_openssh(), b.public_openssh());
        let pem = a.private_openssh().expect("pem");
        assert!(pem.expose().starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let decoded = russh::keys::decode_secret_key(pem.expose(), None).expect("russh reads it back");
        assert_eq!(decoded.public_key().to_openssh().ok(), Some(a.public_openssh()));
        assert!(!format!("{a:?}").contains("PRIVATE"), "Debug must not show the private key");
    }
}
