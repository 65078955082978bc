//! The protocol's fixed bounds: the bottom layer every other module sizes itself by.
//!
//! Nothing here depends on another module of the crate, so both the wire format and the
//! configuration can refer to these constants without an import circle.

/// Largest supported cluster.
pub const REPLICAS_MAX: usize = 7;

/// Size of every message header, in bytes.
pub const HEADER_SIZE: usize = 128;

/// Largest body of any message, in bytes. Every size that reaches the wire is bounded by it.
pub const MESSAGE_BODY_SIZE_MAX: usize = 4 * 1024 * 1024;

/// Largest frame: a header and the largest body.
pub const FRAME_SIZE_MAX: usize = HEADER_SIZE + MESSAGE_BODY_SIZE_MAX;
const _: () = assert!(FRAME_SIZE_MAX <= u32::MAX as usize);

/// Largest state machine operation a client may send, in bytes.
pub const OPERATION_SIZE_MAX: usize = 24 * 1024;

/// Largest pipeline: prepares in flight at once, each a batch of entries.
pub const PIPELINE_MAX: u64 = 16;

/// Most entries one prepare carries.
pub const BATCH_MAX: u64 = 1024;

/// Largest encoded entries list of one prepare, in bytes (count prefix and entry headers
/// included). Any single operation fits.
pub const BATCH_SIZE_MAX: usize = 64 * 1024;

/// Bytes an entry takes in a body besides its own body.
pub const ENTRY_HEADER_SIZE: usize = 16 * 3 + 8 * 4 + 4 + 1;
const _: () = assert!(ENTRY_HEADER_SIZE == 85);

/// Bytes the count of an entries list takes.
pub const ENTRIES_COUNT_SIZE: usize = 4;

/// Bytes a delta chunk takes besides its bytes and, in the last chunk, its end: the target
/// (transfer id, op, op checksum, since), the offset and the chunk's size.
pub const DELTA_HEADER_SIZE: usize = 8 + 8 + 16 + 8 + 8 + 4;
const _: () = assert!(DELTA_HEADER_SIZE == 52);

/// Bytes the last chunk of a delta adds: the whole delta's size and checksum.
pub const DELTA_END_SIZE: usize = 8 + 16;
const _: () = assert!(DELTA_END_SIZE == 24);

/// Bytes a get_state's cursor takes (its body, when it has one): the target and the offset.
pub const DELTA_CURSOR_SIZE: usize = 8 + 8 + 16 + 8 + 8;
const _: () = assert!(DELTA_CURSOR_SIZE == 48);

const _: () =
    assert!(BATCH_SIZE_MAX >= ENTRIES_COUNT_SIZE + ENTRY_HEADER_SIZE + OPERATION_SIZE_MAX);

/// The log suffix after a replica's commit number spans at most three pipelines (one in flight,
/// one of commit numbers not yet heard, one of commit numbers not yet persisted), each bounded
/// by `PIPELINE_MAX` batches of `BATCH_SIZE_MAX` bytes, and must fit in one do_view_change or
/// start_view message.
const _: () = assert!(3 * PIPELINE_MAX as usize * BATCH_SIZE_MAX + 4096 <= MESSAGE_BODY_SIZE_MAX);

/// Views and ops a message may carry are below this: no honest cluster reaches it, and
/// arithmetic on smaller numbers cannot overflow. Decoding rejects anything larger. It is the
/// hard bound; the jump bounds below keep a replica from being moved close to it.
pub const NUMBER_MAX: u64 = 1 << 62;

/// Views that remain after the highest view a message may move a replica to in one jump: a
/// cluster pushed there by a faulty peer can still complete this many view changes, one at a
/// time (each takes at least a view-change timeout: centuries).
pub const VIEW_HEADROOM: u64 = 1 << 32;

/// The highest view a message may move a replica to in one jump. Above it a replica takes a
/// view from a message only as a single step (its own view plus one), and its own view never
/// goes past `NUMBER_MAX - 1`, the last view a message can carry.
pub const VIEW_JUMP_MAX: u64 = NUMBER_MAX - 1 - VIEW_HEADROOM;

/// Ops that remain after the highest op or commit number a message may move a replica to in
/// one jump. Ops advance far faster than views (millions a second), so their headroom is half
/// the number space: 73 years at a billion ops a second.
pub const OP_HEADROOM: u64 = 1 << 61;

/// The highest op or commit number a message may move a replica to in one jump (a state
/// machine delta's op, a commit number announced ahead of the log). Above it a replica takes
/// such a number only if it is at most one past its own log; its log grows one op at a time.
pub const OP_JUMP_MAX: u64 = NUMBER_MAX - 1 - OP_HEADROOM;
