//! Just enough DER to take an RSA private key apart.
//!
//! aws-lc-rs hands out a private key only as PKCS#8 (RFC 5208), while the JWT signer wants
//! the PKCS#1 `RSAPrivateKey` inside it (RFC 8017, appendix A.1.2) and the official
//! runner's `.credentials_rsaparams` file wants its integers one by one. Both structures
//! are short sequences of definite-length TLVs, so a reader for SEQUENCE, INTEGER and
//! OCTET STRING is all it takes; anything else is refused.

const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_SEQUENCE: u8 = 0x30;

/// The integers of a two-prime PKCS#1 `RSAPrivateKey`, big-endian as DER stores them
/// (a positive INTEGER may start with one zero byte).
#[derive(Clone, Copy)]
pub(crate) struct RsaPrivateKeyParts<'a> {
    pub modulus: &'a [u8],
    pub public_exponent: &'a [u8],
    pub private_exponent: &'a [u8],
    pub prime1: &'a [u8],
    pub prime2: &'a [u8],
    pub exponent1: &'a [u8],
    pub exponent2: &'a [u8],
    pub coefficient: &'a [u8],
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`:
/// `SEQUENCE { version INTEGER, algorithm SEQUENCE, privateKey OCTET STRING, … }`.
pub(crate) fn pkcs1_in_pkcs8(pkcs8: &[u8]) -> Option<&[u8]> {
    let (info, rest) = read(pkcs8, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (_version, info) = read(info, TAG_INTEGER)?;
    let (_algorithm, info) = read(info, TAG_SEQUENCE)?;
    let (private_key, _attributes) = read(info, TAG_OCTET_STRING)?;
    Some(private_key)
}

/// Splits a PKCS#1 `RSAPrivateKey` (version 0, two primes) into its integers.
pub(crate) fn rsa_private_key(pkcs1: &[u8]) -> Option<RsaPrivateKeyParts<'_>> {
    let (key, rest) = read(pkcs1, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (version, key) = read(key, TAG_INTEGER)?;
    if version != [0] {
        // Version 1 means more than two primes, which nothing here can express.
        return None;
    }
    let mut ints = [&[][..]; 8];
    let mut input = key;
    for slot in &mut ints {
        let (value, rest) = read(input, TAG_INTEGER)?;
        *slot = value;
        input = rest;
    }
    if !input.is_empty() {
        return None;
    }
    let [modulus, public_exponent, private_exponent, prime1, prime2, exponent1, exponent2, coefficient] = ints;
    Some(RsaPrivateKeyParts { modulus, public_exponent, private_exponent, prime1, prime2, exponent1, exponent2, coefficient })
}

/// Reads one TLV with `tag`; returns its contents and what follows it.
fn read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, input) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len_byte, input) = input.split_first()?;
    let (len, input) = if len_byte < 0x80 {
        (usize::from(len_byte), input)
    } else {
        // Long form: the low bits count the length bytes; four are plenty for a key.
        let count = usize::from(len_byte & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, input) = input.split_at(count);
        (bytes.iter().fold(0usize, |len, b| (len << 8) | usize::from(*b)), input)
    };
    if input.len() < len {
        return None;
    }
    Some(input.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lengths_are_read() {
        assert_eq!(read(&[0x02, 0x01, 0x05, 0xff], TAG_INTEGER), Some((&[0x05][..], &[0xff][..])));
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        let (contents, rest) = read(&long, TAG_OCTET_STRING).expect("long form");
        assert_eq!((contents.len(), rest.len()), (0x80, 0));
    }

    #[test]
    fn truncated_or_mistagged_input_is_refused() {
        assert_eq!(read(&[0x02, 0x02, 0x05], TAG_INTEGER), None);
        assert_eq!(read(&[0x04, 0x01, 0x05], TAG_INTEGER), None);
        assert_eq!(read(&[0x02, 0x85, 0, 0, 0, 0, 1], TAG_INTEGER), None);
        assert!(rsa_private_key(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_none(), "multi-prime version");
    }
}
