//! The runner's RSA key: OAuth client assertions, session keys, message bodies.

use aes::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{
    KeyPair, KeyPairComponents, KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    PrivateDecryptingKey, PublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use solstice_core::Secret;

use crate::GithubError;

mod der;

/// How long a client assertion is valid. The token service refuses more than 5 minutes.
const ASSERTION_LIFETIME_SECS: i64 = 300;
/// Assertions are back-dated by this much to tolerate a clock running slightly ahead of
/// the service's.
const CLOCK_SKEW_SECS: i64 = 30;

/// The runner's 2048-bit RSA key pair.
///
/// It signs the OAuth client assertions (RS256, or PS256 when the service requires FIPS
/// cryptography) and unwraps the session key of a pool session. The RSA arithmetic is
/// aws-lc-rs's (constant-time, already in the tree through rustls), not the `rsa` crate,
/// whose decryption leaks timing (RUSTSEC-2023-0071, no fixed release). `Debug` never
/// shows it.
pub struct RunnerKey {
    decrypting: OaepPrivateDecryptingKey,
    public: PublicKeyParams,
    /// PKCS#1 DER of the private key, base64, for the JWT signer and the key file.
    pkcs1: Secret,
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
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| GithubError::Crypto("generate an RSA key"))?;
        Self::from_pair(&pair)
    }

    fn from_pair(pair: &KeyPair) -> Result<Self, GithubError> {
        let pkcs8 = pair.as_der().map_err(|_| GithubError::Crypto("encode the RSA key"))?;
        let pkcs8 = pkcs8.as_ref();
        let decrypting = PrivateDecryptingKey::from_pkcs8(pkcs8)
            .ok()
            .and_then(|key| OaepPrivateDecryptingKey::new(key).ok())
            .ok_or(GithubError::Crypto("load the RSA key for decryption"))?;
        let pkcs1 = der::pkcs1_in_pkcs8(pkcs8).ok_or(GithubError::Crypto("encode the RSA key"))?;
        let parts = der::rsa_private_key(pkcs1).ok_or(GithubError::Crypto("encode the RSA key"))?;
        let public = PublicKeyParams {
            exponent: STANDARD.encode(strip_zeros(parts.public_exponent)),
            modulus: STANDARD.encode(strip_zeros(parts.modulus)),
        };
        // DER bytes are binary; keep them base64-encoded inside the Secret.
        Ok(Self { decrypting, public, pkcs1: Secret::new(STANDARD.encode(pkcs1)) })
    }

    /// The public exponent and modulus, base64-encoded.
    pub fn public_params(&self) -> PublicKeyParams {
        self.public.clone()
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
        let k = der::rsa_private_key(&der).ok_or(GithubError::Crypto("encode the RSA key"))?;
        let n = strip_zeros(k.modulus);
        let half = n.len().div_ceil(2);
        let enc = |bytes: &[u8], len: usize| STANDARD.encode(pad(strip_zeros(bytes), len));
        let json = serde_json::json!({
            "d": enc(k.private_exponent, n.len()),
            "dp": enc(k.exponent1, half),
            "dq": enc(k.exponent2, half),
            "exponent": STANDARD.encode(strip_zeros(k.public_exponent)),
            "inverseQ": enc(k.coefficient, half),
            "modulus": STANDARD.encode(n),
            "p": enc(k.prime1, half),
            "q": enc(k.prime2, half),
        });
        Ok(Secret::new(json.to_string()))
    }

    /// Reads a key from `.credentials_rsaparams` JSON (keys in any casing), as this
    /// runner and the official one write it.
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
        let (n, e) = (get("modulus")?, get("exponent")?);
        let components = KeyPairComponents {
            // aws-lc-rs wants the public integers without leading zeros; the private ones
            // may keep .NET's padding.
            public_key: PublicKeyComponents { n: strip_zeros(&n), e: strip_zeros(&e) },
            d: get("d")?,
            p: get("p")?,
            q: get("q")?,
            dP: get("dp")?,
            dQ: get("dq")?,
            qInv: get("inverseQ")?,
        };
        // from_components checks n = p*q and every CRT value against d and the primes.
        let pair = KeyPair::from_components(&components).map_err(|_| bad("holds an inconsistent key"))?;
        Self::from_pair(&pair)
    }

    fn der_bytes(&self) -> Result<Vec<u8>, GithubError> {
        STANDARD.decode(self.pkcs1.expose()).map_err(|_| GithubError::Crypto("encode the RSA key"))
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

    /// Unwraps a session key: RSA-OAEP with SHA-256 when `fips`, else SHA-1 (MGF1 with
    /// the same hash, no label); if that fails, the other hash is tried (services have
    /// been seen to disagree with their own flag).
    ///
    /// # Errors
    /// [`GithubError::Crypto`] if neither hash decrypts it.
    pub fn decrypt_session_key(&self, ciphertext: &[u8], fips: bool) -> Result<Secret, GithubError> {
        let mut out = vec![0u8; self.decrypting.min_output_size()];
        let decrypt = |algorithm: &'static OaepAlgorithm, out: &mut [u8]| self.decrypting.decrypt(algorithm, ciphertext, out, None).map(|p| p.len());
        let (first, second) =
            if fips { (&OAEP_SHA256_MGF1SHA256, &OAEP_SHA1_MGF1SHA1) } else { (&OAEP_SHA1_MGF1SHA1, &OAEP_SHA256_MGF1SHA256) };
        let len = decrypt(first, &mut out)
            .or_else(|_| decrypt(second, &mut out))
            .map_err(|_| GithubError::Crypto("decrypt the session key"))?;
        Ok(Secret::new(STANDARD.encode(&out[..len])))
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

    /// Wraps `secret` for `key` as the service does: RSA-OAEP, MGF1 with the same hash.
    fn wrap(key: &RunnerKey, secret: &[u8], algorithm: &'static OaepAlgorithm) -> Vec<u8> {
        use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey};
        let p = key.public_params();
        let (n, e) = (STANDARD.decode(&p.modulus).expect("b64"), STANDARD.decode(&p.exponent).expect("b64"));
        let public: PublicEncryptingKey = PublicKeyComponents { n: &n[..], e: &e[..] }.try_into().expect("public key");
        let public = OaepPublicEncryptingKey::new(public).expect("oaep key");
        let mut out = vec![0u8; public.ciphertext_size()];
        public.encrypt(algorithm, secret, &mut out, None).expect("encrypt").to_vec()
    }

    #[test]
    fn session_keys_decrypt_with_either_hash() {
        let key = test_key();
        let secret = [7u8; 32];
        for (ct, fips) in [(wrap(key, &secret, &OAEP_SHA1_MGF1SHA1), false), (wrap(key, &secret, &OAEP_SHA256_MGF1SHA256), true)] {
            for flag in [fips, !fips] {
                let plain = key.decrypt_session_key(&ct, flag).expect("decrypt");
                assert_eq!(STANDARD.decode(plain.expose()).expect("b64"), secret);
            }
        }
        assert!(key.decrypt_session_key(&[1u8; 256], false).is_err(), "garbage is refused");
    }

    /// A key file in the official runner's layout, made by OpenSSL rather than by this
    /// code, still loads, unwraps OpenSSL's OAEP ciphertexts and is written back
    /// identically: runners registered before the move to aws-lc-rs keep working.
    #[test]
    fn an_existing_key_file_still_loads_and_decrypts() {
        const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/openssl-rsa/");
        let read = |name: &str| std::fs::read(format!("{DIR}{name}")).expect("fixture");
        let json = String::from_utf8(read("credentials_rsaparams.json")).expect("utf-8");
        let key = RunnerKey::from_rsaparams_json(&json).expect("load");
        let plain = read("plain.bin");
        for (name, fips) in [("ct_sha1.bin", false), ("ct_sha256.bin", true)] {
            let got = key.decrypt_session_key(&read(name), fips).expect("decrypt");
            assert_eq!(STANDARD.decode(got.expose()).expect("b64"), plain, "{name}");
        }
        let written: serde_json::Value = serde_json::from_str(key.to_rsaparams_json().expect("encode").expose()).expect("json");
        let original: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(written, original);
    }

    #[test]
    fn an_inconsistent_key_file_is_refused() {
        let json = test_key().to_rsaparams_json().expect("encode");
        let mut value: serde_json::Value = serde_json::from_str(json.expose()).expect("json");
        value["dp"] = serde_json::Value::String(STANDARD.encode([5u8; 128]));
        let err = RunnerKey::from_rsaparams_json(&value.to_string()).expect_err("inconsistent");
        assert!(err.to_string().contains("inconsistent"), "{err}");
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
