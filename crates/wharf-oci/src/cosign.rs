//! cosign signatures, verified against the operator's public keys.
//!
//! cosign stores the signature of image `sha256:HEX` as an OCI manifest under
//! the tag `sha256-HEX.sig`; each of its layers is a "simple signing" payload
//! (JSON naming the signed digest under `critical.image.docker-manifest-digest`)
//! whose ECDSA P-256 / SHA-256 signature sits base64-encoded in the layer's
//! `dev.cosignproject.cosign/signature` annotation. A signature counts when one
//! configured key verifies it *and* its payload names the image's digest — a
//! valid signature of another image proves nothing about this one.
//!
//! Written here rather than taken from the sigstore crates: verifying one
//! ECDSA signature over a payload is a few lines on `ring` (already the TLS
//! stack's), where those crates bring hundreds of dependencies and a network
//! client. Key-based signatures only; keyless (Fulcio certificates, Rekor
//! bundles) are not verified.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use wharf_core::{Digest, Tag};

/// The media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Largest payload read: real ones are a few hundred bytes.
pub const MAX_PAYLOAD_BYTES: u64 = 64 * 1024;

/// The DER prefix of a P-256 public key in SubjectPublicKeyInfo form
/// (`id-ecPublicKey`, `prime256v1`, then a 66-byte BIT STRING), which is what
/// `cosign generate-key-pair` and `openssl ec -pubout` write.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why a key or a signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CosignError {
    /// The key file is not a PEM P-256 public key.
    #[error("{0}: not a PEM ECDSA P-256 public key (as `cosign generate-key-pair` writes)")]
    BadKey(String),
    /// The image has no `sha256-HEX.sig` tag, or it holds no signature layer.
    #[error("{0} is not signed (no cosign signature)")]
    Unsigned(Digest),
    /// Signatures exist, but none verifies with a trusted key for this digest.
    #[error("no cosign signature of {digest} verifies with a trusted key ({why})")]
    NotVerified {
        /// The image.
        digest: Digest,
        /// What was wrong with each signature found.
        why: String,
    },
}

/// A trusted cosign public key.
#[derive(Clone, PartialEq, Eq)]
pub struct CosignKey {
    name: String,
    point: Vec<u8>,
}

impl std::fmt::Debug for CosignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CosignKey({})", self.name)
    }
}

impl CosignKey {
    /// Reads a PEM `PUBLIC KEY`; `name` (the file) is used in messages.
    pub fn from_pem(name: &str, pem: &str) -> Result<CosignKey, CosignError> {
        let bad = || CosignError::BadKey(name.to_owned());
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != "-----BEGIN PUBLIC KEY-----")
            .skip(1)
            .take_while(|l| *l != "-----END PUBLIC KEY-----")
            .collect();
        let der = STANDARD.decode(body).map_err(|_| bad())?;
        let point = der.strip_prefix(&P256_SPKI_PREFIX[..]).ok_or_else(bad)?;
        if point.len() != 65 || point[0] != 0x04 {
            return Err(bad());
        }
        Ok(CosignKey {
            name: name.to_owned(),
            point: point.to_vec(),
        })
    }

    /// Where the key came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            &self.point,
        )
        .verify(payload, signature)
        .is_ok()
    }
}

/// The tag under which cosign stores the signatures of `digest`.
pub fn signature_tag(digest: &Digest) -> Option<Tag> {
    Tag::parse(&format!("{}.sig", digest.to_string().replace(':', "-"))).ok()
}

/// One signature layer of a `.sig` manifest: the payload blob to fetch and
/// the signature over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    /// The payload blob.
    pub payload: Digest,
    /// Its size as the manifest declares it.
    pub size: u64,
    /// The base64 signature from the annotation.
    pub signature: String,
}

/// The signature layers of a cosign `.sig` manifest (others are ignored).
pub fn signature_layers(manifest: &[u8]) -> Vec<SignatureLayer> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(manifest) else {
        return Vec::new();
    };
    let Some(layers) = v["layers"].as_array() else {
        return Vec::new();
    };
    layers
        .iter()
        .filter(|l| l["mediaType"] == SIMPLE_SIGNING_MEDIA_TYPE)
        .filter_map(|l| {
            Some(SignatureLayer {
                payload: Digest::parse(l["digest"].as_str()?).ok()?,
                size: l["size"].as_u64()?,
                signature: l["annotations"][SIGNATURE_ANNOTATION].as_str()?.to_owned(),
            })
        })
        .collect()
}

/// Checks one signature: a trusted key verifies `signature` over `payload`,
/// and the payload names `image`. Returns the key that verified it.
pub fn verify_signature<'k>(
    keys: &'k [CosignKey],
    image: &Digest,
    payload: &[u8],
    signature: &str,
) -> Result<&'k CosignKey, String> {
    let raw = STANDARD
        .decode(signature.trim())
        .map_err(|_| "a signature is not base64".to_owned())?;
    let key = keys
        .iter()
        .find(|k| k.verifies(payload, &raw))
        .ok_or_else(|| "a signature verifies with no trusted key".to_owned())?;
    let named = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| {
            v["critical"]["image"]["docker-manifest-digest"]
                .as_str()
                .map(str::to_owned)
        })
        .ok_or_else(|| "a signed payload names no image digest".to_owned())?;
    if named != image.to_string() {
        return Err(format!("a signature is for {named}, another image"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEoSiG1QjML2Y6GSo///pUJ26P9iNK
0OL4ahn7MjRvuPFR05Ii3jgs8Yf7MGOdyF4oBA29EZXCMptbU3+BYrNRiQ==
-----END PUBLIC KEY-----
";
    const OTHER_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfy8blco96BHSPPK27JN6w8Ykp/Np
qHiHRum1wHHdTtO/sjw7HGCXCLMHmDf3KoxxxQj3GsdvPOw4Z19eAZyK+g==
-----END PUBLIC KEY-----
";
    // Made with `openssl dgst -sha256 -sign` over PAYLOAD with KEY's private half.
    const PAYLOAD: &str = r#"{"critical":{"identity":{"docker-reference":"example.test/team/app"},"image":{"docker-manifest-digest":"sha256:05b3abf2579a5eb66403cd78be557fd860633a1fe2103c7642030defe32c657f"},"type":"cosign container image signature"},"optional":null}"#;
    const SIGNATURE: &str = "MEUCIEMZWj8HjavcklDfE6+yzj4IoqDmkQjyG//Db4k+RpyYAiEAiNBCP8p/fQnqQL1s4LKag1/qIw1fHGiiW/7a0u6ythE=";

    #[test]
    fn a_signature_counts_only_with_a_trusted_key_and_for_its_own_image() {
        let key = CosignKey::from_pem("cosign.pub", KEY).unwrap();
        let other = CosignKey::from_pem("other.pub", OTHER_KEY).unwrap();
        let image = Digest::sha256_of(b"manifest");
        let both = [other.clone(), key.clone()];
        let ok = verify_signature(&both, &image, PAYLOAD.as_bytes(), SIGNATURE);
        assert_eq!(ok.unwrap().name(), "cosign.pub");
        assert!(verify_signature(&[other], &image, PAYLOAD.as_bytes(), SIGNATURE).is_err());
        // The right key, another image.
        let err = verify_signature(
            std::slice::from_ref(&key),
            &Digest::sha256_of(b"x"),
            PAYLOAD.as_bytes(),
            SIGNATURE,
        )
        .unwrap_err();
        assert!(err.contains("another image"), "{err}");
        // A changed payload no longer verifies.
        let tampered = PAYLOAD.replace("team/app", "team/evil");
        assert!(verify_signature(
            std::slice::from_ref(&key),
            &image,
            tampered.as_bytes(),
            SIGNATURE
        )
        .is_err());
        assert!(verify_signature(&[key], &image, PAYLOAD.as_bytes(), "not base64!").is_err());
    }

    #[test]
    fn keys_must_be_p256_public_keys() {
        assert!(CosignKey::from_pem("k", "").is_err());
        assert!(CosignKey::from_pem(
            "k",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
        let private = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n";
        assert!(CosignKey::from_pem("k", private).is_err());
    }

    #[test]
    fn signature_layers_are_read_from_a_sig_manifest() {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "layers": [
                {"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, "digest": Digest::sha256_of(PAYLOAD.as_bytes()).to_string(),
                 "size": PAYLOAD.len(), "annotations": {SIGNATURE_ANNOTATION: SIGNATURE}},
                {"mediaType": "text/plain", "digest": Digest::sha256_of(b"").to_string(), "size": 0}
            ]
        });
        let layers = signature_layers(manifest.to_string().as_bytes());
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].signature, SIGNATURE);
        assert!(signature_layers(b"not json").is_empty());
        let tag = signature_tag(&Digest::sha256_of(b"manifest")).unwrap();
        assert!(tag.as_str().starts_with("sha256-05b3abf2") && tag.as_str().ends_with(".sig"));
    }
}
