//! Byte layout of everything the file buffer stores, one file per format in the order of the
//! contract in [`super`]: chunk files (`chunk_file.rs`: a header and framed data values;
//! `scan.rs`: reading them back, corrupt frames included), data
//! values (`value.rs`), the keys of an output's sled tree (`keys.rs`) and chunk metadata
//! (`meta.rs`). Every decoder here treats its input as untrusted (it comes from disk) and
//! returns a [`CodecError`] instead of panicking; `fuzz/fuzz_targets/buffer_decode.rs` holds it
//! to that.
//!
//! The layouts are versioned by their first byte so that a later release can read what this one
//! wrote; a decoder that meets an unknown version refuses the value (and the chunk is
//! quarantined) rather than guessing.

mod chunk_file;
mod keys;
mod meta;
mod scan;
mod value;

#[cfg(test)]
pub(crate) mod test_files;

pub use chunk_file::*;
pub use keys::*;
pub use meta::*;
pub use scan::*;
pub use value::*;

/// Why stored bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Shorter than its fixed header.
    #[error("value too short ({0} bytes)")]
    Truncated(usize),
    /// Written by a release this one does not know.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// The checksum does not match the contents: the bytes changed after they were written.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// Checksum stored in the value.
        stored: u32,
        /// Checksum of the bytes as read.
        computed: u32,
    },
    /// The checksum matched but the contents are inconsistent (a bug, or a forged value).
    #[error("malformed value: {0}")]
    Malformed(String),
    /// A chunk file whose (intact) header names another chunk than the one its name says.
    #[error("chunk file of chunk {found} found where chunk {expected} belongs")]
    OtherChunk {
        /// The chunk the header names.
        found: crate::buffer::ChunkId,
        /// The chunk the file's name says.
        expected: crate::buffer::ChunkId,
    },
    /// A key of unexpected length or prefix.
    #[error("malformed key of {0} bytes")]
    BadKey(usize),
}

/// Decodes any stored value, guessing its kind from the key if there is one (the fuzz entry
/// point: it must never panic, whatever the bytes). Returns a short description on success.
pub fn decode_stored(key: Option<&[u8]>, value: &[u8]) -> Result<String, CodecError> {
    match key.map(chunk_of_key) {
        Some(Err(e)) => Err(e),
        Some(Ok(_)) if key.and_then(|k| k.first()) == Some(&META_PREFIX) => {
            decode_meta(value).map(|m| format!("meta: {} records", m.records))
        }
        Some(Ok(_)) => decode_value(value).map(|v| format!("value: {} ends", v.ends().len())),
        None => match decode_meta(value) {
            Ok(m) => Ok(format!("meta: {} records", m.records)),
            Err(_) => decode_value(value).map(|v| format!("value: {} ends", v.ends().len())),
        },
    }
}
