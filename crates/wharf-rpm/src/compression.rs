//! Decompressing metadata files by their name: gz, bz2, xz, zst or plain.
//!
//! Every decoder is a `Read` over the compressed `Read`, so a parser above it
//! sees a stream and memory stays flat whatever the file's size.

use std::io::{BufReader, Read};

use crate::RpmError;

/// A metadata file's compression, from its name's ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// `.gz`
    Gzip,
    /// `.bz2`
    Bzip2,
    /// `.xz`
    Xz,
    /// `.zst`
    Zstd,
}

impl Compression {
    /// Decides from a file name; `.zck` (zchunk) is refused, since only its
    /// plain siblings are parsed (zchunk files are still mirrored byte for byte).
    pub fn from_name(name: &str) -> Result<Compression, RpmError> {
        Ok(if name.ends_with(".gz") {
            Compression::Gzip
        } else if name.ends_with(".bz2") {
            Compression::Bzip2
        } else if name.ends_with(".xz") {
            Compression::Xz
        } else if name.ends_with(".zst") {
            Compression::Zstd
        } else if name.ends_with(".xml") {
            Compression::None
        } else {
            return Err(RpmError::Metadata(format!(
                "{name}: cannot tell its compression (expected .xml, .gz, .bz2, .xz or .zst)"
            )));
        })
    }

    /// A reader of the decompressed bytes.
    pub fn decoder<'a>(
        self,
        compressed: impl Read + Send + 'a,
    ) -> Result<Box<dyn Read + Send + 'a>, RpmError> {
        Ok(match self {
            Compression::None => Box::new(compressed),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(compressed)),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(compressed)),
            Compression::Zstd => Box::new(
                ruzstd::decoding::StreamingDecoder::new(BufReader::new(compressed))
                    .map_err(|e| RpmError::Metadata(format!("not a zstd stream: {e}")))?,
            ),
        })
    }
}
