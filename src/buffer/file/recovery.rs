//! Startup recovery of one output's tree, and the quarantine of chunks that cannot be read.
//!
//! Recovery reads only metadata (one small value per chunk), never record data, so a backlog of
//! many gigabytes starts in the time it takes to read its chunk list. Record data is verified
//! when a chunk is first taken for delivery ([`super::queue`]); a chunk that fails then is
//! quarantined the same way as one whose metadata fails here.

use sled::Tree;

use super::codec::{self, chunk_data_prefix, meta_key, ChunkMeta, StoredState, META_PREFIX};
use super::quarantine;
use super::store::{max_chunk_id, Store, StoreError};
use super::writer::Op;
use crate::buffer::ChunkId;

/// What recovery found in a tree.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Readable chunks, oldest first, every one queued (staged chunks are closed: their
    /// appender is gone).
    pub chunks: Vec<(ChunkId, ChunkMeta)>,
    /// First id free for new chunks.
    pub next_id: u64,
    /// Chunks moved to quarantine.
    pub quarantined: u64,
}

/// Loads the chunk list of output `output`, quarantining chunks whose metadata is unreadable.
pub(crate) fn recover(store: &Store, tree: &Tree, output: &str) -> Result<Recovered, StoreError> {
    let mut rec = Recovered::default();
    let mut bad = Vec::new();
    for kv in tree.scan_prefix([META_PREFIX]) {
        let (k, v) = kv?;
        let decoded = codec::chunk_of_key(&k).and_then(|id| Ok((id, codec::decode_meta(&v)?)));
        match decoded {
            Ok((id, mut meta)) => {
                meta.state = StoredState::Queued;
                rec.chunks.push((id, meta));
            }
            Err(e) => bad.push((k.to_vec(), e)),
        }
    }
    for (key, err) in bad {
        let reason = format!("unreadable chunk metadata: {err}");
        match codec::chunk_of_key(&key) {
            Ok(id) => quarantine_chunk(store, tree, output, id, &reason)?,
            Err(_) => {
                let value = tree.get(&key)?.map(|v| v.to_vec()).unwrap_or_default();
                quarantine::write(
                    &store.quarantine_dir(),
                    output,
                    ChunkId(0),
                    &format!("malformed key: {err}"),
                    &[(key.clone(), value)],
                )?;
                tracing::error!(output, "buffer: malformed key quarantined");
                store.submit_wait(tree, vec![Op::RemoveKey(key)])?;
            }
        }
        rec.quarantined += 1;
    }
    rec.next_id = max_chunk_id(tree)?.map_or(1, |m| m.0.saturating_add(1));
    Ok(rec)
}

/// Copies every stored entry of chunk `id` to the quarantine directory (fsynced), then purges
/// the chunk durably. Logs an error naming the file.
pub(crate) fn quarantine_chunk(
    store: &Store,
    tree: &Tree,
    output: &str,
    id: ChunkId,
    reason: &str,
) -> Result<(), StoreError> {
    let mut entries = Vec::new();
    if let Some(meta) = tree.get(meta_key(id))? {
        entries.push((meta_key(id).to_vec(), meta.to_vec()));
    }
    for kv in tree.scan_prefix(chunk_data_prefix(id)) {
        let (k, v) = kv?;
        entries.push((k.to_vec(), v.to_vec()));
    }
    let path = quarantine::write(&store.quarantine_dir(), output, id, reason, &entries)?;
    tracing::error!(output, chunk = %id, reason, file = %path.display(),
        "buffer: chunk cannot be read; moved to quarantine (its records are not delivered)");
    store.submit_wait(tree, vec![Op::Purge { chunk: id }])
}
