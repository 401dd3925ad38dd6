//! The runner's RSA key: OAuth client assertions, session keys, message bodies.

use aes::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::der::Decode;
use rsa::pkcs1::{EncodeRsaPrivateKey, RsaPrivateKey, UintRef};
use rsa::traits::PublicKeyParts;
use serde::Serialize;
use solstice_core::Secret;

use crate::GithubError;

/// How long a client assertion is valid. The token service refuses more than 5 minutes.
const ASSERTION_LIFETIME_SECS: i64 = 300;
/// Assertions are back-dated by this much to tolerate a clock running slightly ahead of
/// the service's.
const CLOCK_SKEW_SECS: i64 = 30;

/// The runner's 2048-bit RSA key pair.
///
/// It signs the OAuth client assertions (RS256, or PS256 when the service requires FIPS
/// cryptography) and unwraps the session key of a pool session. `Debug` never shows it.
pub struct RunnerKey {
    key: rsa::PrivateKey,
    /// PKCS#1 DER of the private key, for the JWT signer.
    der: Secret,
}

impl std::fmt::Debug for RunnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunnerKey(***)")
    }
}

/// The public half as GitHub wants it: base64 of the unsigned big-endian integers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicKeyParams {
    /// The exponent (`AQAB` for 65537).
    pub exponent: String,
    /// The modulus (256 bytes for a 2048-bit key).
    pub modulus: String,
}

/// The claims of a client assertion.
#[derive(Debug, Serialize)]
struct AssertionClaims<'a> {
    sub: &'a str,
    iss: &'a str,
    aud: &'a str,
    jti: String,
    nbf: i64,
    exp: i64,
}

impl RunnerKey {
    /// Generates a fresh 2048-bit key with exponent 65537.
    ///
    /// # Errors
    /// [`GithubError::Crypto`] if the system's random number generator fails.
    pub fn generate() -> Result<Self, GithubError> {
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048)
            .map_err(|_| GithubError::Crypto("generate an RSA key"))?;
        Self::from_key(key)
    }

    fn from_key(key: rsa::PrivateKey) -> Result<Self, GithubError> {
        let der = key.to_pkcs1_der().map_err(|_| GithubError::Crypto("encode the RSA key"))?;
        // DER bytes are binary; keep them base64-encoded inside the Secret.
        let der = Secret::new(STANDARD.encode(der.as_bytes()));
        Ok(Self { key, der })
    }

    /// The public exponent and modulus, base64-encoded.
    pub fn public_params(&self) -> PublicKeyParams {
        let public = self.key.as_public_key();
        PublicKeyParams {
            exponent: STANDARD.encode(strip_zeros(&public.e_bytes())),
            modulus: STANDARD.encode(strip_zeros(&public.n_bytes())),
        }
    }

    /// The public key in the XML form of the runner-admin registration.
    pub fn public_xml(&self) -> String {
        let p = self.public_params();
        format!("<RSAKeyValue><Modulus>{}</Modulus><Exponent>{}</Exponent></RSAKeyValue>", p.modulus, p.exponent)
    }

    /// The key as the official runner's `.credentials_rsaparams` JSON (.NET
    /// `RSAParameters`, each value base64 big-endian, private parts padded to .NET's sizes).
    ///
    /// # Errors
    /// [`GithubError::Crypto`] if the key cannot be encoded.
    pub fn to_rsaparams_json(&self) -> Result<Secret, GithubError> {
        let der = self.der_bytes()?;
        let k = RsaPrivateKey::<UintRef<'_>>::from_der(&der).map_err(|_| GithubError::Crypto("encode the RSA key"))?;
        let n = strip_zeros(k.modulus.as_bytes());
        let half = n.len().div_ceil(2);
        let enc = |bytes: &[u8], len: usize| STANDARD.encode(pad(strip_zeros(bytes), len));
        let json = serde_json::json!({
            "d": enc(k.private_exponent.as_bytes(), n.len()),
            "dp": enc(k.exponent1.as_bytes(), half),
            "dq": enc(k.exponent2.as_bytes(), half),
            "exponent": STANDARD.encode(strip_zeros(k.public_exponent.as_bytes())),
            "inverseQ": enc(k.coefficient.as_bytes(), half),
            "modulus": STANDARD.encode(n),
            "p": enc(k.prime1.as_bytes(), half),
            "q": enc(k.prime2.as_bytes(), half),
        });
        Ok(Secret::new(json.to_string()))
    }

    /// Reads a key from `.credentials_rsaparams` JSON (keys in any casing).
    ///
    /// # Errors
    /// [`GithubError::Config`] if a value is missing or the key is inconsistent.
    pub fn from_rsaparams_json(text: &str) -> Result<Self, GithubError> {
        let bad = |what: &str| GithubError::Config(format!("the RSA key file {what}"));
        let value: serde_json::Value = serde_json::from_str(text).map_err(|_| bad("is not JSON"))?;
        let get = |name: &str| -> Result<Vec<u8>, GithubError> {
            let text = crate::json::str_field(&value, name).ok_or_else(|| bad(&format!("lacks `{name}`")))?;
            STANDARD.decode(text.trim()).map_err(|_| bad(&format!("has an invalid `{name}`")))
        };
        let (n, e, d, p, q, dp, dq, qi) =
            (get("modulus")?, get("exponent")?, get("d")?, get("p")?, get("q")?, get("dp")?, get("dq")?, get("inverseQ")?);
        fn uint(b: &[u8]) -> Result<UintRef<'_>, GithubError> {
            UintRef::new(strip_zeros(b)).map_err(|_| GithubError::Config("the RSA key file has an invalid number".to_owned()))
        }
        let parts = RsaPrivateKey {
            modulus: uint(&n)?,
            public_exponent: uint(&e)?,
            private_exponent: uint(&d)?,
            prime1: uint(&p)?,
            prime2: uint(&q)?,
            exponent1: uint(&dp)?,
            exponent2: uint(&dq)?,
            coefficient: uint(&qi)?,
            other_prime_infos: None,
        };
        let key = rsa::PrivateKey::try_from(parts).map_err(|_| bad("holds an inconsistent key"))?;
        Self::from_key(key)
    }

    fn der_bytes(&self) -> Result<Vec<u8>, GithubError> {
        STANDARD.decode(self.der.expose()).map_err(|_| GithubError::Crypto("encode the RSA key"))
    }

    /// Signs a client assertion for the token service: `sub` = `iss` = `client_id`,
    /// `aud` = `audience`, a fresh `jti`, valid for 5 minutes from 30 s ago. RS256, or
    /// PS256 when `fips` is set.
    ///
    /// # Errors
    /// [`GithubError::Crypto`] if signing fails.
    pub fn client_assertion(&self, client_id: &str, audience: &str, fips: bool) -> Result<Secret, GithubError> {
        let nbf = time::OffsetDateTime::now_utc().unix_timestamp() - CLOCK_SKEW_SECS;
        let claims = AssertionClaims {
            sub: client_id,
            iss: client_id,
            aud: audience,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf,
            exp: nbf + ASSERTION_LIFETIME_SECS,
        };
        let alg = if fips { jsonwebtoken::Algorithm::PS256 } else { jsonwebtoken::Algorithm::RS256 };
        let der = self.der_bytes()?;
        let key = jsonwebtoken::EncodingKey::from_rsa_der(&der);
        jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key)
            .map(Secret::new)
            .map_err(|_| GithubError::Crypto("sign the OAuth client assertion"))
    }

    /// Unwraps a session key: RSA-OAEP with SHA-256 when `fips`, else SHA-1; if that
    /// fails, the other hash is tried (services have been seen to disagree with their
    /// own flag).
    ///
    /// # Errors
    /// [`GithubError::Crypto`] if neither hash decrypts it.
    pub fn decrypt_session_key(&self, ciphertext: &[u8], fips: bool) -> Result<Secret, GithubError> {
        let sha1 = || self.key.oaep_decrypt::<sha1::Sha1>(ciphertext);
        let sha256 = || self.key.oaep_decrypt::<sha2::Sha256>(ciphertext);
        let plain = if fips { sha256().or_else(|_| sha1()) } else { sha1().or_else(|_| sha256()) }
            .map_err(|_| GithubError::Crypto("decrypt the session key"))?;
        Ok(Secret::new(STANDARD.encode(plain)))
    }
}

/// Decrypts a pool message body: AES-CBC with PKCS#7 padding under the session key
/// (base64 in a [`Secret`]), then UTF-8 with a leading byte-order mark removed.
///
/// # Errors
/// [`GithubError::Crypto`] for a bad key, IV or padding, or text that is not UTF-8.
pub fn decrypt_message_body(session_key: &Secret, iv_b64: &str, body_b64: &str) -> Result<String, GithubError> {
    let key = STANDARD.decode(session_key.expose()).map_err(|_| GithubError::Crypto("read the session key"))?;
    let iv = STANDARD.decode(iv_b64.trim()).map_err(|_| GithubError::Crypto("read the message IV"))?;
    let body = STANDARD.decode(body_b64.trim()).map_err(|_| GithubError::Crypto("read the message body"))?;
    let plain = match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, &iv)
            .map_err(|_| GithubError::Crypto("use the session key"))?
            .decrypt_padded_vec::<Pkcs7>(&body),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(&key, &iv)
            .map_err(|_| GithubError::Crypto("use the session key"))?
            .decrypt_padded_vec::<Pkcs7>(&body),
        32 => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &iv)
            .map_err(|_| GithubError::Crypto("use the session key"))?
            .decrypt_padded_vec::<Pkcs7>(&body),
        _ => return Err(GithubError::Crypto("use a session key of that size")),
    }
    .map_err(|_| GithubError::Crypto("decrypt the message body"))?;
    let plain = plain.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(&plain);
    String::from_utf8(plain.to_vec()).map_err(|_| GithubError::Crypto("read the decrypted message as UTF-8"))
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len().saturating_sub(1));
    &bytes[first..]
}

fn pad(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0; len.saturating_sub(bytes.len())];
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn b64url(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// One key per test binary: RSA key generation is slow.
    pub(crate) fn test_key() -> &'static RunnerKey {
        static KEY: OnceLock<RunnerKey> = OnceLock::new();
        KEY.get_or_init(|| RunnerKey::generate().expect("key generation"))
    }

    #[test]
    fn the_exponent_is_aqab_and_the_modulus_256_bytes() {
        let p = test_key().public_params();
        assert_eq!(p.exponent, "AQAB");
        assert_eq!(STANDARD.decode(&p.modulus).expect("base64").len(), 256);
    }

    #[test]
    fn rsaparams_round_trip_to_the_same_key() {
        let key = test_key();
        let json = key.to_rsaparams_json().expect("encode");
        let value: serde_json::Value = serde_json::from_str(json.expose()).expect("json");
        assert_eq!(STANDARD.decode(value["d"].as_str().expect("d")).expect("b64").len(), 256);
        assert_eq!(STANDARD.decode(value["p"].as_str().expect("p")).expect("b64").len(), 128);
        let back = RunnerKey::from_rsaparams_json(json.expose()).expect("decode");
        assert_eq!(back.public_params(), key.public_params());
    }

    #[test]
    fn session_keys_decrypt_with_either_hash() {
        let key = test_key();
        let public = key.key.to_public_key();
        let secret = [7u8; 32];
        for (ct, fips) in [
            (public.oaep_encrypt::<sha1::Sha1>(&secret).expect("enc"), false),
            (public.oaep_encrypt::<sha2::Sha256>(&secret).expect("enc"), true),
        ] {
            for flag in [fips, !fips] {
                let plain = key.decrypt_session_key(&ct, flag).expect("decrypt");
                assert_eq!(STANDARD.decode(plain.expose()).expect("b64"), secret);
            }
        }
    }

    #[test]
    fn message_bodies_decrypt_and_lose_their_bom() {
        use aes::cipher::BlockModeEncrypt;
        let key = [3u8; 32];
        let iv = [9u8; 16];
        let mut plain = vec![0xEF, 0xBB, 0xBF];
        plain.extend_from_slice(br#"{"jobId":"x"}"#);
        let ct = cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, &iv).expect("init").encrypt_padded_vec::<Pkcs7>(&plain);
        let text = decrypt_message_body(&Secret::new(STANDARD.encode(key)), &STANDARD.encode(iv), &STANDARD.encode(ct))
            .expect("decrypt");
        assert_eq!(text, r#"{"jobId":"x"}"#);
    }

    #[test]
    fn assertions_verify_with_the_registered_public_key() {
        let key = test_key();
        let p = key.public_params();
        let n = b64url(&STANDARD.decode(&p.modulus).expect("b64"));
        let e = b64url(&STANDARD.decode(&p.exponent).expect("b64"));
        let decoding = jsonwebtoken::DecodingKey::from_rsa_components(&n, &e).expect("key");
        for (fips, alg) in [(false, jsonwebtoken::Algorithm::RS256), (true, jsonwebtoken::Algorithm::PS256)] {
            let jwt = key.client_assertion("client-1", "http://h/token/1", fips).expect("sign");
            let mut validation = jsonwebtoken::Validation::new(alg);
            validation.set_audience(&["http://h/token/1"]);
            validation.set_issuer(&["client-1"]);
            let data = jsonwebtoken::decode::<serde_json::Value>(jwt.expose(), &decoding, &validation).expect("verify");
            let claims = data.claims;
            assert_eq!(claims["sub"], "client-1");
            let (nbf, exp) = (claims["nbf"].as_i64().expect("nbf"), claims["exp"].as_i64().expect("exp"));
            assert!(exp - nbf <= 300, "lifetime {}", exp - nbf);
            assert!(claims.get("jti").and_then(|j| j.as_str()).is_some_and(|j| !j.is_empty()));
            assert_eq!(data.header.alg, alg);
        }
    }
}
