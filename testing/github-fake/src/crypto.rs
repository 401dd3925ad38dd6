//! The service side of the crypto: verifying client assertions, wrapping session keys,
//! encrypting message bodies. Written against the libraries directly, not the runner's
//! code, so the two check each other.

use aes::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use aws_lc_rs::rsa::{OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey, PublicKeyComponents};

/// The registered public key of an agent (base64 big-endian, as sent at registration).
#[derive(Debug, Clone)]
pub(crate) struct AgentKey {
    pub exponent: String,
    pub modulus: String,
}

fn decode(text: &str) -> Result<Vec<u8>, String> {
    STANDARD.decode(text.trim()).map_err(|_| "public key is not base64".to_owned())
}

impl AgentKey {
    fn public(&self) -> Result<OaepPublicEncryptingKey, String> {
        let n = decode(&self.modulus)?;
        let e = decode(&self.exponent)?;
        let public: PublicEncryptingKey =
            PublicKeyComponents { n: &n[..], e: &e[..] }.try_into().map_err(|_| "invalid public key".to_owned())?;
        OaepPublicEncryptingKey::new(public).map_err(|_| "invalid public key".to_owned())
    }

    /// Wraps `key` with RSA-OAEP (SHA-256 when `sha256`, else SHA-1; MGF1 with the same hash).
    pub fn wrap(&self, key: &[u8], sha256: bool) -> Result<String, String> {
        let public = self.public()?;
        let algorithm = if sha256 { &OAEP_SHA256_MGF1SHA256 } else { &OAEP_SHA1_MGF1SHA1 };
        let mut out = vec![0u8; public.ciphertext_size()];
        let ct = public.encrypt(algorithm, key, &mut out, None).map_err(|_| "OAEP encryption failed".to_owned())?;
        Ok(STANDARD.encode(ct))
    }

    /// Verifies a client assertion signed with one of `algorithms`; returns its claims.
    pub fn verify(
        &self,
        jwt: &str,
        audience: &str,
        client_id: &str,
        algorithms: &[jsonwebtoken::Algorithm],
    ) -> Result<serde_json::Value, String> {
        let n = URL_SAFE_NO_PAD.encode(decode(&self.modulus)?);
        let e = URL_SAFE_NO_PAD.encode(decode(&self.exponent)?);
        let key = jsonwebtoken::DecodingKey::from_rsa_components(&n, &e).map_err(|e| e.to_string())?;
        let mut validation = jsonwebtoken::Validation::new(algorithms.first().copied().unwrap_or(jsonwebtoken::Algorithm::RS256));
        validation.algorithms = algorithms.to_vec();
        validation.set_audience(&[audience]);
        validation.set_issuer(&[client_id]);
        validation.sub = Some(client_id.to_owned());
        validation.validate_nbf = true;
        validation.leeway = 60;
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &validation).map_err(|e| e.to_string())?;
        let claims = data.claims;
        let nbf = claims.get("nbf").and_then(serde_json::Value::as_i64).unwrap_or(0);
        let exp = claims.get("exp").and_then(serde_json::Value::as_i64).unwrap_or(i64::MAX);
        if exp - nbf > 300 {
            return Err(format!("Bearer token lifetime {} s is greater than the allowed maximum lifetime 00:05:00", exp - nbf));
        }
        Ok(claims)
    }
}

/// AES-256-CBC with PKCS#7 under `key`; returns (iv, body), both base64.
pub(crate) fn encrypt_body(key: &[u8], plain: &[u8]) -> (String, String) {
    let mut iv = [0u8; 16];
    let _ = getrandom::fill(&mut iv);
    let ct = match cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &iv) {
        Ok(enc) => enc.encrypt_padded_vec::<Pkcs7>(plain),
        Err(_) => Vec::new(),
    };
    (STANDARD.encode(iv), STANDARD.encode(ct))
}

/// Random bytes.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let _ = getrandom::fill(&mut out);
    out
}
