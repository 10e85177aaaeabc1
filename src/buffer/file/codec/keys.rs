//! Keys of an output's sled tree: `'m' | chunk id (u64 BE)` for chunk metadata,
//! `'d' | chunk id (u64 BE) | seq (u32 BE)` for the data values of chunks written by the first
//! release. Big-endian, so that sled's byte order is chunk order.

use super::CodecError;
use crate::buffer::ChunkId;

/// First byte of the data-key space (`d` + chunk id BE u64 + seq BE u32).
pub const DATA_PREFIX: u8 = b'd';
/// First byte of the metadata-key space (`m` + chunk id BE u64).
pub const META_PREFIX: u8 = b'm';
/// Length of a data key.
pub const DATA_KEY_LEN: usize = 13;
/// Length of a metadata key.
pub const META_KEY_LEN: usize = 9;

/// The data key of value `seq` of chunk `chunk`. Big-endian so that sled's byte order is
/// (chunk, seq) order: a chunk's values are one contiguous, ordered range.
pub fn data_key(chunk: ChunkId, seq: u32) -> [u8; DATA_KEY_LEN] {
    let mut k = [0u8; DATA_KEY_LEN];
    k[0] = DATA_PREFIX;
    k[1..9].copy_from_slice(&chunk.0.to_be_bytes());
    k[9..13].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The metadata key of chunk `chunk`.
pub fn meta_key(chunk: ChunkId) -> [u8; META_KEY_LEN] {
    let mut k = [0u8; META_KEY_LEN];
    k[0] = META_PREFIX;
    k[1..9].copy_from_slice(&chunk.0.to_be_bytes());
    k
}

/// The prefix shared by all data keys of `chunk`.
pub fn chunk_data_prefix(chunk: ChunkId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = DATA_PREFIX;
    k[1..9].copy_from_slice(&chunk.0.to_be_bytes());
    k
}

/// The chunk id in a data or metadata key.
pub fn chunk_of_key(key: &[u8]) -> Result<ChunkId, CodecError> {
    let ok = matches!(
        (key.first(), key.len()),
        (Some(&DATA_PREFIX), DATA_KEY_LEN) | (Some(&META_PREFIX), META_KEY_LEN)
    );
    if !ok {
        return Err(CodecError::BadKey(key.len()));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&key[1..9]);
    Ok(ChunkId(u64::from_be_bytes(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_chunk_then_seq_and_name_their_chunk() {
        assert!(data_key(ChunkId(1), u32::MAX) < data_key(ChunkId(2), 0));
        assert!(data_key(ChunkId(2), 1) < data_key(ChunkId(2), 2));
        assert_eq!(chunk_of_key(&data_key(ChunkId(42), 3)), Ok(ChunkId(42)));
        assert_eq!(chunk_of_key(&meta_key(ChunkId(42))), Ok(ChunkId(42)));
        assert!(data_key(ChunkId(7), 0).starts_with(&chunk_data_prefix(ChunkId(7))));
        assert_eq!(chunk_of_key(b"x"), Err(CodecError::BadKey(1)));
    }
}
