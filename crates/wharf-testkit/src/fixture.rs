//! Image fixtures built locally, with no network: OCI image layouts that stock clients read.
//!
//! The layout is written directly (blobs, `index.json`, `oci-layout`) rather than through umoci,
//! so every byte is under the test's control and the digests are known before any client runs.
//! Layers are real gzip'd tarballs of random content, so they are incompressible, distinct across
//! fixtures, and unpack in podman and buildah like any image.

mod random;
pub mod rpm;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub use random::{RandomReader, Rng};

/// The media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The media type of an OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The media type of a gzip'd OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The media type of a Docker schema 2 manifest.
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The annotation that names a tag in an OCI layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Content stored as a blob, as a descriptor names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// The media type the referring descriptor gives.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// The size in bytes.
    pub size: u64,
}

impl BlobRef {
    /// The OCI descriptor JSON for this blob.
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// What one image is made of.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// How many layers.
    pub layers: usize,
    /// Bytes of random data in each layer (the tarball is a little larger).
    pub layer_size: usize,
    /// The OCI architecture, such as `amd64` or `arm64`.
    pub arch: String,
    /// The OCI operating system, normally `linux`.
    pub os: String,
}

impl ImageSpec {
    /// A linux/amd64 image with `layers` layers of `layer_size` random bytes each.
    pub fn new(layers: usize, layer_size: usize) -> ImageSpec {
        ImageSpec {
            layers,
            layer_size,
            arch: "amd64".to_owned(),
            os: "linux".to_owned(),
        }
    }

    /// The same image for another architecture.
    pub fn arch(mut self, arch: &str) -> ImageSpec {
        self.arch = arch.to_owned();
        self
    }
}

/// A single-platform image written into a layout.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest blob; its digest is the image's digest.
    pub manifest: BlobRef,
    /// The config blob; its digest is what podman calls the image ID.
    pub config: BlobRef,
    /// The layer blobs, base first.
    pub layers: Vec<BlobRef>,
    /// The architecture it declares.
    pub arch: String,
}

/// A multi-platform image: an index over one [`Image`] per platform.
#[derive(Debug, Clone)]
pub struct MultiArch {
    /// The index blob; its digest is the multi-arch image's digest.
    pub index: BlobRef,
    /// The per-platform images, in index order.
    pub images: Vec<Image>,
}

/// An OCI image layout directory that fixtures are written into.
pub struct OciLayout {
    dir: PathBuf,
    rng: Rng,
}

impl OciLayout {
    /// Creates an empty layout at `dir` (which may exist) with a fresh random seed.
    pub fn create(dir: &Path) -> Result<OciLayout> {
        fs::create_dir_all(dir.join("blobs/sha256"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        if !dir.join("index.json").exists() {
            write_json(
                &dir.join("index.json"),
                &json!({"schemaVersion": 2, "manifests": []}),
            )?;
        }
        Ok(OciLayout {
            dir: dir.to_owned(),
            rng: Rng::from_entropy(),
        })
    }

    /// The layout directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The skopeo/podman reference `oci:DIR:TAG`.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }

    /// Stores `bytes` as a blob.
    pub fn write_blob(&self, media_type: &str, bytes: &[u8]) -> Result<BlobRef> {
        let digest = sha256_digest(bytes);
        let path = self.blob_path(&digest)?;
        fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(BlobRef {
            media_type: media_type.to_owned(),
            digest,
            size: bytes.len() as u64,
        })
    }

    /// Reads a blob back.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    }

    /// Writes an image with random layers and tags it `tag`.
    pub fn add_image(&mut self, tag: &str, spec: &ImageSpec) -> Result<Image> {
        let image = self.write_image(spec)?;
        self.tag(tag, &image.manifest, None)?;
        Ok(image)
    }

    /// Writes a linux/amd64 + linux/arm64 index tagged `tag`; each platform's image is also
    /// tagged `TAG-ARCH` so clients can address it alone.
    pub fn add_two_arch_index(
        &mut self,
        tag: &str,
        layers: usize,
        layer_size: usize,
    ) -> Result<MultiArch> {
        let mut images = Vec::new();
        let mut entries = Vec::new();
        for arch in ["amd64", "arm64"] {
            let image = self.write_image(&ImageSpec::new(layers, layer_size).arch(arch))?;
            self.tag(
                &format!("{tag}-{arch}"),
                &image.manifest,
                Some(platform(&image)),
            )?;
            let mut entry = image.manifest.descriptor();
            entry["platform"] = platform(&image);
            entries.push(entry);
            images.push(image);
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        });
        let index = self.write_blob(OCI_INDEX, &to_bytes(&index)?)?;
        self.tag(tag, &index, None)?;
        Ok(MultiArch { index, images })
    }

    /// The digest `index.json` gives for `tag`, as skopeo left it after copying into the layout.
    pub fn tagged_digest(&self, tag: &str) -> Result<String> {
        let index = read_json(&self.dir.join("index.json"))?;
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        for entry in entries {
            if entry["annotations"][REF_NAME] == tag {
                return entry["digest"]
                    .as_str()
                    .map(str::to_owned)
                    .context("index.json entry without a digest");
            }
        }
        bail!("tag {tag} not in {}/index.json", self.dir.display())
    }

    fn write_image(&mut self, spec: &ImageSpec) -> Result<Image> {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        let mut history = Vec::new();
        for layer_idx in 0..spec.layers {
            let data = self.rng.bytes(spec.layer_size);
            let tar = layer_tar(layer_idx, &data)?;
            diff_ids.push(sha256_digest(&tar));
            layers.push(self.write_blob(OCI_LAYER_GZIP, &gzip(&tar)?)?);
            history.push(json!({
                "created": "2024-01-01T00:00:00Z",
                "created_by": format!("wharf-testkit layer {layer_idx}"),
            }));
        }
        let mut config = json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": spec.arch,
            "os": spec.os,
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        if spec.arch == "arm64" {
            config["variant"] = json!("v8");
        }
        let config = self.write_blob(OCI_CONFIG, &to_bytes(&config)?)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(BlobRef::descriptor).collect::<Vec<_>>(),
        });
        let manifest = self.write_blob(OCI_MANIFEST, &to_bytes(&manifest)?)?;
        Ok(Image {
            manifest,
            config,
            layers,
            arch: spec.arch.clone(),
        })
    }

    fn tag(&self, tag: &str, target: &BlobRef, platform: Option<Value>) -> Result<()> {
        let path = self.dir.join("index.json");
        let mut index = read_json(&path)?;
        let manifests = index["manifests"]
            .as_array_mut()
            .context("index.json has no manifests array")?;
        manifests.retain(|entry| entry["annotations"][REF_NAME] != tag);
        let mut entry = target.descriptor();
        entry["annotations"] = json!({ REF_NAME: tag });
        if let Some(platform) = platform {
            entry["platform"] = platform;
        }
        manifests.push(entry);
        write_json(&path, &index)
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .with_context(|| format!("not a sha256 digest: {digest}"))?;
        Ok(self.dir.join("blobs/sha256").join(hex))
    }
}

/// A new temporary directory whose path is all lower case, deleted on drop.
///
/// podman names an image pulled from `oci:PATH` after PATH, and image names must be lower case,
/// so fixture layouts live under paths like this one.
pub fn scratch_dir() -> Result<tempfile::TempDir> {
    let name = format!("wharf-e2e-{}", Rng::from_entropy().hex(16));
    Ok(tempfile::Builder::new()
        .prefix(&name)
        .rand_bytes(0)
        .tempdir()?)
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The size and `sha256:` digest of everything `reader` yields, hashed as it streams.
pub fn stream_digest(reader: &mut impl std::io::Read) -> Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let size = std::io::copy(reader, &mut hasher)?;
    Ok((size, format!("sha256:{}", hex::encode(hasher.finalize()))))
}

/// The digest of the manifest in a skopeo `dir:` copy (the digest of its `manifest.json`).
pub fn dir_manifest_digest(dir: &Path) -> Result<String> {
    let bytes = fs::read(dir.join("manifest.json"))
        .with_context(|| format!("no manifest.json in {}", dir.display()))?;
    Ok(sha256_digest(&bytes))
}

fn platform(image: &Image) -> Value {
    let mut platform = json!({"architecture": image.arch, "os": "linux"});
    if image.arch == "arm64" {
        platform["variant"] = json!("v8");
    }
    platform
}

/// A layer tarball: a directory holding one file of `data` and a small text file.
fn layer_tar(layer_idx: usize, data: &[u8]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let dir = format!("layer-{layer_idx}");
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_path(format!("{dir}/"))?;
    header.set_mode(0o755);
    header.set_size(0);
    header.set_mtime(1_704_067_200);
    header.set_cksum();
    builder.append(&header, &[][..])?;
    let text = format!("wharf-testkit layer {layer_idx}\n");
    for (name, content) in [("data.bin", data), ("README", text.as_bytes())] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_path(format!("{dir}/{name}"))?;
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(1_704_067_200);
        header.set_cksum();
        builder.append(&header, content)?;
    }
    Ok(builder.into_inner()?)
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write as _;
    // A fixed (zero) mtime in the gzip header keeps the compressed bytes a pure function of the
    // tarball.
    let mut encoder = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

fn to_bytes(value: &Value) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    fs::write(path, to_bytes(value)?).with_context(|| format!("cannot write {}", path.display()))
}
