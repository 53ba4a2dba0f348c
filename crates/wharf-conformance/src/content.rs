//! Test content: digests, media types, unique blobs, and the manifests that reference them.
//!
//! Every blob and config made here carries fresh random bytes, so each run (and each check)
//! pushes content no earlier run has pushed; that keeps reruns against the same registry honest
//! (a mount or a delete cannot pass because of leftovers).
//! Manifests are kept as the exact bytes that get pushed, because the spec requires registries
//! to store and serve "the exact byte representation provided by the client".

use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256, Sha512};

/// Media types named by the OCI image-spec and the Docker schema 2 documents.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI gzip layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// The OCI empty descriptor's media type.
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// Docker schema 2 image manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// The `Accept` value sent on manifest GET and HEAD requests: every manifest type this
    /// suite pushes, as the spec asks clients to list the types they support.
    pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, \
        application/vnd.oci.image.index.v1+json, \
        application/vnd.docker.distribution.manifest.v2+json, \
        application/vnd.docker.distribution.manifest.list.v2+json";
}

/// The content of the OCI empty descriptor.
pub const EMPTY_JSON: &[u8] = b"{}";
/// The digest of [`EMPTY_JSON`], as the image-spec publishes it.
pub const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// The sha256 digest of zero bytes.
pub const EMPTY_SHA256: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// `sha256:<hex>` of the bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `sha512:<hex>` of the bytes.
pub fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(bytes)))
}

/// 12 random lowercase hex characters; valid in repository names and tags.
pub fn unique_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// `len` bytes no other call returns: sha256 in counter mode over a random seed.
pub fn unique_bytes(len: usize) -> Vec<u8> {
    let seed = uuid::Uuid::new_v4();
    let mut out = Vec::with_capacity(len + 32);
    let mut counter: u64 = 0;
    while out.len() < len {
        let mut hasher = Sha256::new();
        hasher.update(seed.as_bytes());
        hasher.update(counter.to_le_bytes());
        out.extend_from_slice(&hasher.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// A digest that is well formed and almost surely unknown to any registry.
pub fn unknown_digest() -> String {
    sha256(&unique_bytes(32))
}

/// A blob with its media type, as a manifest would reference it.
#[derive(Clone, Debug)]
pub struct Blob {
    /// The media type used in descriptors pointing at this blob.
    pub media_type: &'static str,
    /// The content.
    pub bytes: Vec<u8>,
    /// `sha256:` digest of the content.
    pub digest: String,
}

impl Blob {
    /// A blob over the given bytes.
    pub fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        let digest = sha256(&bytes);
        Blob {
            media_type,
            bytes,
            digest,
        }
    }

    /// A layer of random bytes; registries do not look inside layers, so this need not be a
    /// real tarball.
    pub fn layer(media_type: &'static str, len: usize) -> Blob {
        Blob::new(media_type, unique_bytes(len))
    }

    /// A small image config with a random label so its digest is unique.
    pub fn config(media_type: &'static str, layers: &[&Blob]) -> Blob {
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Labels": { "org.example.conformance.nonce": unique_token() } },
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|it| it.digest.clone()).collect::<Vec<_>>(),
            },
        });
        Blob::new(media_type, to_bytes(&config))
    }

    /// The OCI empty descriptor's blob, `{}`.
    pub fn empty_json() -> Blob {
        Blob::new(media::OCI_EMPTY, EMPTY_JSON.to_vec())
    }

    /// This blob's descriptor.
    pub fn descriptor(&self) -> Value {
        descriptor(self.media_type, &self.digest, self.bytes.len())
    }
}

/// A manifest as the exact bytes pushed, with its media type and digest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The `Content-Type` sent on push, equal to the `mediaType` field.
    pub media_type: String,
    /// The exact bytes pushed.
    pub bytes: Vec<u8>,
    /// `sha256:` digest of the bytes.
    pub digest: String,
}

impl Manifest {
    /// A manifest over exact bytes.
    pub fn from_bytes(media_type: &str, bytes: Vec<u8>) -> Manifest {
        let digest = sha256(&bytes);
        Manifest {
            media_type: media_type.to_owned(),
            bytes,
            digest,
        }
    }

    /// A manifest serialised compactly from JSON.
    pub fn from_value(media_type: &str, value: &Value) -> Manifest {
        Manifest::from_bytes(media_type, to_bytes(value))
    }

    /// This manifest's descriptor, as an index or a `subject` field would carry it.
    pub fn descriptor(&self) -> Value {
        descriptor(&self.media_type, &self.digest, self.bytes.len())
    }
}

/// A descriptor object.
pub fn descriptor(media_type: &str, digest: &str, size: usize) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// An image manifest of `media_type` (OCI or Docker) over a config and layers, with extra
/// top-level fields (`artifactType`, `subject`, `annotations`) merged in.
pub fn image_manifest(
    media_type: &str,
    config: &Value,
    layers: &[Value],
    extra: Map<String, Value>,
) -> Manifest {
    let mut value = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config,
        "layers": layers,
    });
    if let Value::Object(map) = &mut value {
        map.extend(extra);
    }
    Manifest::from_value(media_type, &value)
}

/// An index (OCI image index or Docker manifest list) over child manifests, each given a
/// distinct platform so Docker clients would accept the list too.
pub fn index_manifest(
    media_type: &str,
    children: &[&Manifest],
    extra: Map<String, Value>,
) -> Manifest {
    const ARCHES: [&str; 4] = ["amd64", "arm64", "ppc64le", "s390x"];
    let manifests: Vec<Value> = children
        .iter()
        .enumerate()
        .map(|(idx, child)| {
            let mut desc = child.descriptor();
            desc["platform"] = json!({ "architecture": ARCHES[idx % ARCHES.len()], "os": "linux" });
            desc
        })
        .collect();
    let mut value = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
    });
    if let Value::Object(map) = &mut value {
        map.extend(extra);
    }
    Manifest::from_value(media_type, &value)
}

/// Builds a JSON object from pairs, for the `extra` arguments above.
pub fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}

fn to_bytes(value: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail: its map keys are always strings.
    serde_json::to_vec(value).expect("serde_json::Value always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_json_digest_matches_image_spec() {
        assert_eq!(sha256(EMPTY_JSON), EMPTY_JSON_DIGEST);
        assert_eq!(sha256(b""), EMPTY_SHA256);
    }

    #[test]
    fn unique_bytes_have_requested_length_and_differ() {
        let a = unique_bytes(100);
        let b = unique_bytes(100);
        assert_eq!(a.len(), 100);
        assert_ne!(a, b);
    }

    #[test]
    fn sha512_digest_has_128_hex_chars() {
        let digest = sha512(b"abc");
        assert_eq!(digest.len(), "sha512:".len() + 128);
    }
}
