//! The `state_transfer` target: a backup receives a snapshot delta in new_state chunks,
//! assembles them and installs the snapshot (client table and key-value delta).
//!
//! Input: a control byte, a descriptor count (at most [`DESCRIPTORS_MAX`] are read), that many
//! 6-byte chunk descriptors, then the snapshot's bytes. A descriptor is `start` u16, `size`
//! u16, `flags` u8, `extra` u8: the chunk is `snapshot[start..start + size]` (clipped), sent at
//! offset `start`, as the last chunk if it reaches the snapshot's end or flag bit 6 says so;
//! the other flags bend one field each (wrong base op, offset past the end, wrong total size,
//! wrong total checksum, another sender, the normal flag). With control bit 0 the
//! whole snapshot follows in order, in chunks of a size bits 1–3 pick; bits 4–7 pick the op
//! the delta brings the replica to.
//!
//! Every chunk goes through the real path: encoded as a new_state frame, decoded for replica 1,
//! handed to a fresh replica 1 of a three-replica cluster. Property: the replica installs the
//! delta only if its bytes are a snapshot the decoder accepts.

use bytes::Bytes;
use vsr::checksum::checksum;
use vsr::limits::NUMBER_MAX;
use vsr::wire::{self, DeltaChunk, DeltaEnd, DeltaTarget, NewState, StatePayload};
use vsr::{Config, EntryChecksum, Envelope, Message, Op, Replica, Sender, View};
use vsr_kv::KvStore;

use crate::{CLUSTER, REPLICA_COUNT};

/// Most chunk descriptors read from one input.
const DESCRIPTORS_MAX: usize = 16;

/// Bytes of one chunk descriptor.
const DESCRIPTOR_SIZE: usize = 6;

/// Most chunks the in-order tail splits the snapshot into.
const TAIL_CHUNKS_MAX: usize = 64;

/// Chunk sizes of the in-order tail, by control bits 1–3.
const TAIL_CHUNK_SIZES: [usize; 8] = [usize::MAX, 1, 3, 16, 61, 256, 1024, 4096];

/// The receiving replica.
const RECEIVER: u8 = 1;

/// The delta every chunk of one input describes, unless a descriptor bends a field.
struct Delta {
    op: Op,
    total_size: u64,
    total_checksum: u128,
}

/// Runs one input; see the module docs.
pub fn state_transfer(data: &[u8]) {
    let [control, count, rest @ ..] = data else {
        return;
    };
    let count = usize::from(*count).min(DESCRIPTORS_MAX);
    let Some((descriptors, snapshot)) = rest.split_at_checked(count * DESCRIPTOR_SIZE) else {
        return;
    };
    let snapshot = Bytes::copy_from_slice(snapshot);
    let delta = Delta {
        op: Op(1 + u64::from(control >> 4)),
        total_size: snapshot.len() as u64,
        total_checksum: checksum(&snapshot),
    };
    let config = Config::new(CLUSTER, REPLICA_COUNT);
    let mut replica = Replica::new(config, RECEIVER, KvStore::new(), 0);
    for descriptor in descriptors.chunks_exact(DESCRIPTOR_SIZE) {
        let start = usize::from(u16::from_le_bytes([descriptor[0], descriptor[1]]));
        let size = usize::from(u16::from_le_bytes([descriptor[2], descriptor[3]]));
        let (flags, extra) = (descriptor[4], descriptor[5]);
        let clipped = start.min(snapshot.len())..(start + size).min(snapshot.len());
        let last = clipped.end == snapshot.len() || flags & 64 != 0;
        let mut chunk = chunk(&delta, start as u64, snapshot.slice(clipped), last);
        if flags & 1 != 0 {
            chunk.target.since = Op(1);
        }
        if flags & 2 != 0 {
            chunk.offset = NUMBER_MAX - 1 - u64::from(extra);
        }
        if let Some(end) = chunk.end.as_mut() {
            if flags & 4 != 0 {
                end.size += 1 + u64::from(extra);
            }
            if flags & 8 != 0 {
                end.checksum ^= 1;
            }
        }
        let from = if flags & 16 != 0 { 2 } else { 0 };
        deliver(&mut replica, from, flags & 32 != 0, chunk);
    }
    if control & 1 != 0 {
        let size = TAIL_CHUNK_SIZES[usize::from((control >> 1) & 0b111)]
            .max(snapshot.len() / TAIL_CHUNKS_MAX + 1);
        let mut start = 0;
        while start < snapshot.len() {
            let end = start.saturating_add(size).min(snapshot.len());
            deliver(
                &mut replica,
                0,
                false,
                chunk(
                    &delta,
                    start as u64,
                    snapshot.slice(start..end),
                    end == snapshot.len(),
                ),
            );
            start = end;
        }
    }
    if replica.commit() == delta.op {
        assert!(
            vsr::fuzzing::snapshot::<KvStore>(&snapshot).is_ok(),
            "installed a delta that does not decode"
        );
    } else {
        assert_eq!(replica.commit(), Op(0), "the commit moved without a delta");
    }
}

/// A chunk of `delta` at `offset`, the last one (with the whole delta's size and checksum) if
/// `last`.
fn chunk(delta: &Delta, offset: u64, bytes: Bytes, last: bool) -> DeltaChunk {
    DeltaChunk {
        target: DeltaTarget {
            transfer: 0x5eed,
            op: delta.op,
            op_checksum: EntryChecksum(0xc4ec),
            since: Op(0),
        },
        offset,
        end: last.then_some(DeltaEnd {
            size: delta.total_size,
            checksum: delta.total_checksum,
        }),
        chunk: bytes,
    }
}

/// Sends `chunk` from replica `from` in view 0 to `replica` through the wire format.
fn deliver(replica: &mut Replica<KvStore>, from: u8, normal: bool, chunk: DeltaChunk) {
    let envelope = Envelope {
        cluster: CLUSTER,
        epoch: 0,
        sender: Sender::Replica(from),
        message: Message::NewState(NewState {
            view: View(0),
            op: chunk.target.op,
            commit: chunk.target.op,
            normal,
            payload: StatePayload::Delta(Box::new(chunk)),
        }),
    };
    if wire::body_size(&envelope.message) > wire::MESSAGE_BODY_SIZE_MAX {
        return;
    }
    let frame = wire::encode(&envelope);
    if let Ok(verified) = wire::decode(&frame, &replica.receiver()) {
        replica.on_message(verified);
        replica.drain_commands().for_each(drop);
    }
}
