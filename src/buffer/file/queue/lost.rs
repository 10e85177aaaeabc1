//! Records of a closed chunk lost to corrupt frames in the middle of its file (issue 15,
//! defect 5), found when the chunk is taken: the frames go to quarantine, the records in them
//! are marked delivered so that they are never sent and the indices of the others stay right,
//! and the chunk's other records are delivered as usual.

use std::sync::Arc;

use super::super::quarantine;
use super::super::read::LostFrames;
use super::super::state::{Phase, Prepared};
use super::super::store::StoreError;
use super::Inner;
use crate::buffer::{BufferError, ChunkId, DeliveredSet};

impl Inner {
    /// Chunk `id`, just read for delivery with `delivered` records delivered before, lost the
    /// records in `lost` to corrupt frames. Writes those frames to quarantine, marks their
    /// records delivered (durably: a release or a restart keeps them so), logs and counts the
    /// corruption. Returns the chunk's delivered set with them; `None` if the frames cannot be
    /// quarantined (then the chunk stays on disk and is skipped, like a chunk that cannot be
    /// read and cannot be quarantined). Records marked so by an earlier take are not counted
    /// again.
    pub(super) async fn lost_frames(
        self: &Arc<Self>,
        id: ChunkId,
        mut delivered: DeliveredSet,
        lost: LostFrames,
    ) -> Result<Option<DeliveredSet>, BufferError> {
        let new: Vec<usize> = lost
            .records
            .clone()
            .map(|i| i as usize)
            .filter(|&i| !delivered.contains(i))
            .collect();
        let output = self.policy.output.clone();
        if new.is_empty() {
            // Found at an earlier take (or a previous run), quarantined and counted then.
            tracing::debug!(output, chunk = %id, records = ?lost.records,
                "buffer: records lost to corrupt frames are marked delivered already");
            return Ok(Some(delivered));
        }
        let reason = format!(
            "{} corrupt frame(s) in the middle of a closed chunk's file ({}): the {} records \
             {}..{} (of which {} not delivered) in file bytes {}..{} are lost; the rest of the \
             chunk is kept and delivered",
            lost.frames,
            lost.error,
            lost.records.end - lost.records.start,
            lost.records.start,
            lost.records.end,
            new.len(),
            lost.at.start,
            lost.at.end
        );
        let store = Arc::clone(&self.store);
        let (q_output, q_reason) = (output.clone(), reason.clone());
        let key = format!("frames@{}-{}", lost.at.start, lost.at.end).into_bytes();
        let bytes = lost.bytes;
        let written = tokio::task::spawn_blocking(move || {
            store.take_quarantine_room(bytes.len() as u64 + key.len() as u64 + 8)?;
            quarantine::write(
                store.fs(),
                &store.quarantine_dir(),
                &q_output,
                id,
                &q_reason,
                &[(key, bytes)],
                None,
            )
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::from(e)));
        let path = match written {
            Ok(path) => path,
            Err(e) => {
                tracing::error!(output, chunk = %id, reason, error = %e,
                    "buffer: cannot quarantine the corrupt frames of a chunk; it stays on disk and is skipped");
                self.set_phase(id, Phase::Broken);
                return Ok(None);
            }
        };
        for &i in &new {
            delivered.insert(i);
        }
        let rx = {
            let mut st = self.lock();
            let Some(e) = st.chunks.get_mut(&id) else {
                return Ok(None);
            };
            e.meta.delivered = delivered.clone();
            st.corrupt_frames += u64::from(lost.frames);
            let mut prep = Prepared {
                sync_metadata: true,
                ..Prepared::default()
            };
            prep.put_meta(&mut st, id);
            self.submit(&mut st, prep, |_, _, _| {})?
        };
        self.counters.corrupt_frames.inc_by(u64::from(lost.frames));
        tracing::error!(output, chunk = %id, reason, file = %path.display(),
            "buffer: corrupt frames in a chunk file; moved to quarantine with their records, the rest of the chunk is kept");
        if let Err(e) = rx.await.map_err(|_| StoreError::WriterGone).and_then(|r| r) {
            // Not handed out: taken again later, when the frames are found again.
            self.set_phase(id, Phase::Queued);
            return Err(e.into());
        }
        Ok(Some(delivered))
    }
}
