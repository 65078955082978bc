use proptest::prelude::*;

use super::*;
use crate::limits::NUMBER_MAX;
use crate::numbers::EntryChecksum;

/// The codec alone, without a receiver's checks.
fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    decode_envelope(&Bytes::copy_from_slice(bytes))
}

/// [`decode`] of a shared frame.
fn decode_shared(frame: &Bytes) -> Result<Envelope, DecodeError> {
    decode_envelope(frame)
}

fn entry(op: u64, body: &'static [u8]) -> Entry {
    Entry {
        op: Op(op),
        view: View(7),
        parent: EntryChecksum(0x1111_2222_3333_4444_5555_6666_7777_8888),
        client: 0xabcd_ef01_2345_6789_abcd_ef01_2345_6789,
        session: 3,
        request: op.wrapping_add(100),
        operation: Operation::StateMachine,
        body: Bytes::from_static(body),
        checksum: EntryChecksum(0),
    }
    .sealed()
}

fn envelope(sender: Sender, message: Message) -> Envelope {
    Envelope {
        cluster: 0xc1u128 << 100 | 0x5eed,
        epoch: 0,
        sender,
        message,
    }
}

/// One hand-written example of every variant (and every tag of `Reply` and `NewState`).
fn examples() -> Vec<Envelope> {
    [
        client_examples(),
        normal_examples(),
        view_change_examples(),
        delta_examples(),
        read_examples(),
    ]
    .concat()
}

/// The read path: a query, its answer, a redirect, a confirm, and prepare and commit carrying
/// a round.
fn read_examples() -> Vec<Envelope> {
    let reply = |op, result| {
        envelope(
            Sender::Replica(1),
            Message::Reply(Reply {
                client: 0xc1,
                view: View(4),
                op: Op(op),
                request: 9,
                result,
            }),
        )
    };
    vec![
        envelope(
            Sender::Client(u128::MAX - 5),
            Message::Query(Query {
                request: 9,
                body: Bytes::from_static(b"get k"),
            }),
        ),
        reply(77, ReplyResult::Answered(Bytes::from_static(b"v"))),
        reply(0, ReplyResult::NotPrimary),
        envelope(
            Sender::Replica(2),
            Message::Confirm(Confirm {
                view: View(4),
                round: 12,
            }),
        ),
        envelope(
            Sender::Replica(1),
            Message::Commit(Commit {
                view: View(4),
                commit: Op(70),
                round: 13,
            }),
        ),
        envelope(
            Sender::Replica(1),
            Message::Prepare(Prepare {
                view: View(4),
                commit: Op(40),
                entries: vec![entry(41, b"x")],
                round: 14,
            }),
        ),
        envelope(
            Sender::Replica(1),
            Message::Reply(Reply {
                client: 0xc1,
                view: View(0),
                op: Op(0),
                request: 9,
                result: ReplyResult::WrongCluster {
                    cluster: 0xfeed_0c1d,
                },
            }),
        ),
    ]
}

fn client_examples() -> Vec<Envelope> {
    let client = Sender::Client(u128::MAX - 5);
    let replica = Sender::Replica(2);
    let executed = ReplyResult::Executed(Bytes::from_static(b"ok"));
    vec![
        envelope(
            client,
            Message::Request(Request {
                session: 17,
                request: 5,
                operation: Operation::StateMachine,
                body: Bytes::from_static(b"put k v"),
            }),
        ),
        envelope(
            client,
            Message::Request(Request {
                session: 0,
                request: 1,
                operation: Operation::Register,
                body: Bytes::new(),
            }),
        ),
        envelope(
            replica,
            Message::Reply(Reply {
                client: 0xc1,
                view: View(4),
                op: Op(99),
                request: 5,
                result: executed,
            }),
        ),
        envelope(
            replica,
            Message::Reply(Reply {
                client: 0xc1,
                view: View(4),
                op: Op(17),
                request: 1,
                result: ReplyResult::Registered,
            }),
        ),
        envelope(
            replica,
            Message::Reply(Reply {
                client: 0xc1,
                view: View(4),
                op: Op(0),
                request: 8,
                result: ReplyResult::SessionEvicted,
            }),
        ),
    ]
}

fn normal_examples() -> Vec<Envelope> {
    let replica = Sender::Replica(2);
    let prepare = entry(41, b"set x 1");
    let checksum = prepare.checksum;
    vec![
        envelope(
            replica,
            Message::Prepare(Prepare {
                view: View(7),
                commit: Op(40),
                entries: vec![prepare],
                round: 0,
            }),
        ),
        envelope(
            replica,
            Message::PrepareOk(PrepareOk {
                view: View(7),
                op: Op(41),
                checksum,
            }),
        ),
        envelope(
            replica,
            Message::Commit(Commit {
                view: View(7),
                commit: Op(41),
                round: 0,
            }),
        ),
        envelope(
            replica,
            Message::StartViewChange(StartViewChange { view: View(8) }),
        ),
    ]
}

/// The delta the examples' chunks and cursors name.
fn delta_target() -> DeltaTarget {
    DeltaTarget {
        transfer: 0x7a11_5fe2,
        op: Op(9000),
        op_checksum: EntryChecksum(u128::MAX / 3),
        since: Op(4000),
    }
}

/// A delta's last chunk, and a get_state pulling a delta from where the requester stands.
fn delta_examples() -> Vec<Envelope> {
    let last = StatePayload::Delta(Box::new(DeltaChunk {
        target: delta_target(),
        offset: 196_608,
        end: Some(DeltaEnd {
            size: 196_608 + 14,
            checksum: 0x0123_4567_89ab_cdef,
        }),
        chunk: Bytes::from_static(b"the last chunk"),
    }));
    let messages = vec![
        Message::NewState(NewState {
            view: View(8),
            op: Op(0),
            commit: Op(9000),
            normal: false,
            payload: last,
        }),
        Message::GetState(GetState {
            view: View(8),
            op: Op(4000),
            commit: Op(4000),
            cursor: Some(DeltaCursor {
                target: delta_target(),
                offset: 65_536,
            }),
        }),
    ];
    messages
        .into_iter()
        .map(|message| envelope(Sender::Replica(6), message))
        .collect()
}

fn view_change_examples() -> Vec<Envelope> {
    let replica = Sender::Replica(6);
    let chain = vec![
        entry(41, b"set x 1"),
        entry(42, b""),
        entry(43, &[0xff; 40]),
    ];
    let delta = StatePayload::Delta(Box::new(DeltaChunk {
        target: delta_target(),
        offset: 65_536,
        end: None,
        chunk: Bytes::from_static(b"a chunk of the delta"),
    }));
    let messages = vec![
        Message::DoViewChange(DoViewChange {
            view: View(8),
            last_normal_view: View(7),
            op: Op(43),
            commit: Op(40),
            entries: chain.clone(),
        }),
        Message::DoViewChange(DoViewChange {
            view: View(8),
            last_normal_view: View(6),
            op: Op(40),
            commit: Op(40),
            entries: vec![],
        }),
        Message::StartView(StartView {
            view: View(8),
            op: Op(43),
            commit: Op(40),
            entries: chain.clone(),
        }),
        Message::GetState(GetState {
            view: View(8),
            op: Op(40),
            commit: Op(40),
            cursor: None,
        }),
        Message::NewState(NewState {
            view: View(8),
            op: Op(43),
            commit: Op(41),
            normal: true,
            payload: StatePayload::Entries(chain),
        }),
        Message::NewState(NewState {
            view: View(8),
            op: Op(0),
            commit: Op(9000),
            normal: false,
            payload: delta,
        }),
        Message::Recovery(Recovery { nonce: 0xdead_beef }),
        Message::RecoveryResponse(RecoveryResponse {
            view: View(8),
            nonce: 0xdead_beef,
            op: Op(43),
            commit: Op(41),
            primary: true,
        }),
    ];
    messages
        .into_iter()
        .map(|message| envelope(replica, message))
        .collect()
}

/// Recomputes the size and both checksums of a frame whose fields a test changed.
fn reseal(bytes: &mut [u8]) {
    let size = u32::try_from(bytes.len()).unwrap();
    bytes[64..68].copy_from_slice(&size.to_le_bytes());
    let checksum_body = checksum(&bytes[HEADER_SIZE..]);
    bytes[16..32].copy_from_slice(&checksum_body.to_le_bytes());
    let checksum_header = checksum(&bytes[16..HEADER_SIZE]);
    bytes[..16].copy_from_slice(&checksum_header.to_le_bytes());
}

/// Every single-bit flip and every truncation of `bytes` is rejected.
fn assert_corruption_detected(bytes: &[u8]) {
    let mut corrupt = bytes.to_vec();
    for bit in 0..bytes.len() * 8 {
        corrupt[bit / 8] ^= 1 << (bit % 8);
        let error = decode(&corrupt).expect_err("a flipped bit must be detected");
        assert!(
            matches!(
                error,
                DecodeError::HeaderChecksum | DecodeError::BodyChecksum
            ),
            "bit {bit}: {error:?}"
        );
        corrupt[bit / 8] ^= 1 << (bit % 8);
    }
    assert_eq!(corrupt, bytes);
    for size in 0..bytes.len() {
        let error = decode(&bytes[..size]).expect_err("a truncation must be detected");
        assert!(
            matches!(
                error,
                DecodeError::TooShort { .. } | DecodeError::SizeMismatch { .. }
            ),
            "size {size}: {error:?}"
        );
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(matches!(
        decode(&longer),
        Err(DecodeError::SizeMismatch { .. })
    ));
}

#[test]
fn examples_round_trip() {
    let examples = examples();
    let mut commands: Vec<u8> = Vec::new();
    for example in &examples {
        let bytes = encode(example);
        assert_eq!(bytes.len(), HEADER_SIZE + body_size(&example.message));
        assert_eq!(frame_size(&bytes), Ok(Some(bytes.len())));
        assert_eq!(
            decode(&bytes).as_ref(),
            Ok(example),
            "{}",
            example.message.name()
        );
        assert_eq!(encode(example), bytes, "encoding is deterministic");
        let mut appended = vec![1, 2, 3];
        encode_into(example, &mut appended);
        assert_eq!(appended[3..], bytes[..]);
        commands.push(bytes[74]);
    }
    commands.sort_unstable();
    commands.dedup();
    assert_eq!(
        commands,
        (1..=14).collect::<Vec<u8>>(),
        "every command is exercised"
    );
}

#[test]
fn header_layout() {
    let example = Envelope {
        cluster: 0x0102,
        epoch: 3,
        sender: Sender::Replica(4),
        message: Message::DoViewChange(DoViewChange {
            view: View(5),
            last_normal_view: View(6),
            op: Op(7),
            commit: Op(8),
            entries: vec![],
        }),
    };
    let bytes = encode(&example);
    assert_eq!(bytes.len(), HEADER_SIZE + 4);
    assert_eq!(
        u128::from_le_bytes(bytes[0..16].try_into().unwrap()),
        checksum(&bytes[16..128])
    );
    assert_eq!(
        u128::from_le_bytes(bytes[16..32].try_into().unwrap()),
        checksum(&[0; 4])
    );
    assert_eq!(bytes[32..48], 0x0102u128.to_le_bytes());
    assert_eq!(bytes[48..64], [0; 16]);
    assert_eq!(bytes[64..68], 132u32.to_le_bytes());
    assert_eq!(bytes[68..72], 3u32.to_le_bytes());
    assert_eq!(bytes[72..74], PROTOCOL_VERSION.to_le_bytes());
    assert_eq!(bytes[74..80], [7, 0, 4, 0, 0, 0]);
    assert_eq!(bytes[80..88], 5u64.to_le_bytes());
    assert_eq!(bytes[88..96], 7u64.to_le_bytes());
    assert_eq!(bytes[96..104], 8u64.to_le_bytes());
    assert_eq!(bytes[104..112], 6u64.to_le_bytes());
    assert_eq!(bytes[112..128], [0; 16]);
    assert_eq!(bytes[128..], [0; 4]);

    let request = envelope(
        Sender::Client(0x77),
        Message::Request(Request {
            session: 9,
            request: 10,
            operation: Operation::Noop,
            body: Bytes::from_static(b"xyz"),
        }),
    );
    let bytes = encode(&request);
    assert_eq!(bytes[48..64], 0x77u128.to_le_bytes());
    assert_eq!(bytes[74..80], [1, 1, 0, 2, 0, 0]);
    assert_eq!(bytes[104..112], 10u64.to_le_bytes());
    assert_eq!(bytes[112..128], 9u128.to_le_bytes());
    assert_eq!(&bytes[128..], b"xyz");
}

#[test]
fn examples_detect_every_bit_flip_and_truncation() {
    for example in examples() {
        assert_corruption_detected(&encode(&example));
    }
}

#[test]
fn frame_size_bounds() {
    let bytes = encode(&examples()[0]);
    for size in 0..HEADER_SIZE {
        assert_eq!(frame_size(&bytes[..size]), Ok(None));
    }
    assert_eq!(frame_size(&bytes[..HEADER_SIZE]), Ok(Some(bytes.len())));

    let mut header = bytes[..HEADER_SIZE].to_vec();
    let frame_max = u32::try_from(FRAME_SIZE_MAX).unwrap();
    for (size, expected) in [
        (u32::MAX, Err(DecodeError::TooLarge { size: u32::MAX })),
        (1 << 31, Err(DecodeError::TooLarge { size: 1 << 31 })),
        (
            frame_max + 1,
            Err(DecodeError::TooLarge {
                size: frame_max + 1,
            }),
        ),
        (frame_max, Ok(Some(FRAME_SIZE_MAX))),
        (128, Ok(Some(HEADER_SIZE))),
        (127, Err(DecodeError::TooShort { size: 127 })),
        (0, Err(DecodeError::TooShort { size: 0 })),
    ] {
        header[64..68].copy_from_slice(&size.to_le_bytes());
        assert_eq!(
            frame_size(&header),
            Err(DecodeError::HeaderChecksum),
            "unsealed"
        );
        let checksum_header = checksum(&header[16..HEADER_SIZE]);
        header[..16].copy_from_slice(&checksum_header.to_le_bytes());
        assert_eq!(frame_size(&header), expected, "size {size}");
    }
}

#[test]
fn largest_body_round_trips_and_larger_panics() {
    let reply = |size: usize| {
        envelope(
            Sender::Replica(1),
            Message::Reply(Reply {
                client: 9,
                view: View(1),
                op: Op(2),
                request: 3,
                result: ReplyResult::Executed(Bytes::from(vec![0x5a; size])),
            }),
        )
    };
    let largest = reply(MESSAGE_BODY_SIZE_MAX);
    let bytes = encode(&largest);
    assert_eq!(bytes.len(), FRAME_SIZE_MAX);
    assert_eq!(decode(&bytes), Ok(largest));

    let too_large = reply(MESSAGE_BODY_SIZE_MAX + 1);
    let panic = std::panic::catch_unwind(|| encode(&too_large));
    assert!(
        panic.is_err(),
        "encode must refuse a body over MESSAGE_BODY_SIZE_MAX"
    );
}

/// A request carries at most one operation's bytes, whatever room the frame has.
#[test]
fn a_request_over_the_operation_size_is_rejected() {
    let request = |size: usize| {
        envelope(
            Sender::Client(1),
            Message::Request(Request {
                session: 1,
                request: 1,
                operation: Operation::StateMachine,
                body: Bytes::from(vec![0x5a; size]),
            }),
        )
    };
    let largest = request(crate::limits::OPERATION_SIZE_MAX);
    assert_eq!(decode(&encode(&largest)), Ok(largest));
    assert_eq!(
        decode(&encode(&request(crate::limits::OPERATION_SIZE_MAX + 1))),
        Err(DecodeError::OperationTooLarge {
            size: crate::limits::OPERATION_SIZE_MAX + 1
        })
    );
}

/// Builds a frame with valid checksums from a valid one after `change` edits it.
fn resealed(
    example: &Envelope,
    change: impl FnOnce(&mut Vec<u8>),
) -> Result<Envelope, DecodeError> {
    let mut bytes = encode(example);
    change(&mut bytes);
    reseal(&mut bytes);
    decode(&bytes)
}

#[test]
fn checksummed_but_invalid_frames_are_rejected() {
    let examples = examples();
    let (request, prepare, view_change, delta) =
        (&examples[0], &examples[5], &examples[9], &examples[14]);
    let malformed = |result: Result<Envelope, DecodeError>| {
        assert!(
            matches!(result, Err(DecodeError::Malformed(_))),
            "{result:?}"
        );
    };
    assert_eq!(
        resealed(request, |b| b[72] = 2),
        Err(DecodeError::Version { version: 2 })
    );
    assert_eq!(
        resealed(request, |b| b[74] = 0),
        Err(DecodeError::UnknownKind { kind: 0 })
    );
    assert_eq!(
        resealed(request, |b| b[74] = 15),
        Err(DecodeError::UnknownKind { kind: 15 })
    );
    malformed(resealed(request, |b| b[79] = 1)); // reserved
    malformed(resealed(request, |b| b[75] = 2)); // sender kind
    malformed(resealed(request, |b| b[76] = 1)); // replica index of a client
    malformed(resealed(request, |b| b[77] = 3)); // operation
    malformed(resealed(request, |b| b[80] = 1)); // view unused by request
    malformed(resealed(request, |b| b[120] = 1)); // session above u64
    malformed(resealed(&examples[7], |b| b[112] = 1)); // wide slot unused by commit
    malformed(resealed(&examples[7], |b| b.push(0))); // body on an empty command
    malformed(resealed(&examples[16], |b| b[78] = 2)); // flag neither 0 nor 1
    malformed(resealed(&examples[13], |b| b[77] = 3)); // new_state payload tag
    malformed(resealed(&examples[3], |b| b[77] = 6)); // reply result tag
    malformed(resealed(&examples[3], |b| b[112] = 1)); // wide slot of a registered reply
    let reads = read_examples();
    malformed(resealed(&reads[2], |b| b.push(0))); // not-primary reply with bytes
    malformed(resealed(&reads[3], |b| b[104..112].fill(0))); // confirm of round 0
    malformed(resealed(&reads[3], |b| b[88] = 1)); // op slot unused by confirm
    assert_eq!(
        resealed(&reads[0], |b| b[80] = 1), // view slot unused by query
        Err(DecodeError::Malformed(
            "header field unused by the message is not zero"
        ))
    );
    malformed(resealed(&examples[3], |b| b.push(0))); // registered reply with bytes
    malformed(resealed(prepare, |b| b[88] ^= 1)); // header op disagrees with entry op
    malformed(resealed(prepare, |b| b.push(0))); // trailing byte
    malformed(resealed(prepare, |b| b.truncate(b.len() - 1))); // entry body cut short
    malformed(resealed(prepare, |b| b[128 + 4 + 80] = 0xff)); // entry body size too large
    malformed(resealed(prepare, |b| {
        b.truncate(HEADER_SIZE);
        b.extend_from_slice(&0u32.to_le_bytes()); // a prepare without entries
    }));
    malformed(resealed(view_change, |b| b[128] = 4)); // count beyond the entries
    malformed(resealed(view_change, |b| {
        b[128..132].copy_from_slice(&u32::MAX.to_le_bytes());
    }));
    malformed(resealed(view_change, |b| b[128] = 2)); // trailing entry
    malformed(resealed(delta, |b| {
        let size = b.len();
        b[size - 24] = 0; // chunk size disagrees with the chunk
    }));
    malformed(resealed(delta, |b| {
        // A chunk that is not the last, and empty.
        b.truncate(HEADER_SIZE + DELTA_HEADER_SIZE - 4);
        b.extend_from_slice(&0u32.to_le_bytes());
    }));
    malformed(resealed(delta, |b| b[77] = 3)); // new_state payload tag
    let (last, cursor) = (&examples[17], &examples[18]);
    malformed(resealed(last, |b| b[HEADER_SIZE + 48] ^= 1)); // size is not the last chunk's end
    malformed(resealed(last, |b| b[77] = 1)); // a last chunk's end read as the chunk
    malformed(resealed(cursor, |b| b.truncate(HEADER_SIZE))); // cursor flagged, no body
    malformed(resealed(cursor, |b| b[78] = 0)); // a body without the cursor flag
    assert_eq!(
        resealed(cursor, |b| b[HEADER_SIZE + 15] = 0xff), // the target's op out of bounds
        Err(DecodeError::OutOfBounds)
    );
    assert_eq!(
        resealed(prepare, |b| b[HEADER_SIZE + 4 + 64] ^= 1), // entry view
        Err(DecodeError::EntryChecksum { op: Op(41) })
    );
}

#[test]
fn entries_must_be_valid_and_consecutive() {
    let mut broken = entry(41, b"x");
    broken.request += 1;
    let bad_checksum = envelope(
        Sender::Replica(0),
        Message::StartView(StartView {
            view: View(1),
            op: Op(42),
            commit: Op(40),
            entries: vec![entry(40, b""), broken],
        }),
    );
    assert_eq!(
        decode(&encode(&bad_checksum)),
        Err(DecodeError::EntryChecksum { op: Op(41) })
    );

    for ops in [[40, 42], [40, 40], [41, 40], [u64::MAX, 0]] {
        let gap = envelope(
            Sender::Replica(0),
            Message::NewState(NewState {
                view: View(1),
                op: Op(42),
                commit: Op(40),
                normal: false,
                payload: StatePayload::Entries(ops.iter().map(|op| entry(*op, b"")).collect()),
            }),
        );
        assert_eq!(
            decode(&encode(&gap)),
            Err(DecodeError::Malformed("entry ops are not consecutive")),
            "{ops:?}"
        );
    }
}

fn arbitrary_bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

fn arbitrary_operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        Just(Operation::Register),
        Just(Operation::StateMachine),
        Just(Operation::Noop)
    ]
}

/// A view, op or commit number a cluster can reach.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![0..16u64, 0..NUMBER_MAX]
}

fn arbitrary_entry_at(op: u64) -> impl Strategy<Value = Entry> {
    (
        number(),
        any::<u128>(),
        any::<u128>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_flat_map(move |fields| (Just(fields), arbitrary_operation(), arbitrary_bytes()))
        .prop_map(
            move |((view, parent, client, session, request), operation, body)| {
                Entry {
                    op: Op(op),
                    view: View(view),
                    parent: EntryChecksum(parent),
                    client,
                    session,
                    request,
                    operation,
                    body,
                    checksum: EntryChecksum(0),
                }
                .sealed()
            },
        )
}

fn arbitrary_entry() -> impl Strategy<Value = Entry> {
    any::<u64>().prop_flat_map(arbitrary_entry_at)
}

/// `count` entries with consecutive ops from `start`.
fn arbitrary_entries_from(start: u64, count: u64) -> impl Strategy<Value = Vec<Entry>> {
    (0..count)
        .map(|index| arbitrary_entry_at(start + index))
        .collect::<Vec<_>>()
}

/// Up to five entries with consecutive ops.
fn arbitrary_entries() -> impl Strategy<Value = Vec<Entry>> {
    (number(), 0..=5u64)
        .prop_flat_map(|(start, count)| arbitrary_entries_from(start.min(NUMBER_MAX - 8), count))
}

fn arbitrary_payload() -> impl Strategy<Value = StatePayload> {
    let numbers = (number(), number(), number(), number());
    let checksums = any::<(u128, u128)>();
    let delta = (numbers, checksums, arbitrary_bytes(), any::<bool>()).prop_map(
        |((transfer, op, since, offset), (op_checksum, total_checksum), chunk, last)| {
            let offset = offset.min(NUMBER_MAX - 64);
            // Only a last chunk may be empty, and it ends the delta.
            let last = last || chunk.is_empty();
            StatePayload::Delta(Box::new(DeltaChunk {
                target: DeltaTarget {
                    transfer,
                    op: Op(op),
                    op_checksum: EntryChecksum(op_checksum),
                    since: Op(since),
                },
                offset,
                end: last.then(|| DeltaEnd {
                    size: offset + chunk.len() as u64,
                    checksum: total_checksum,
                }),
                chunk,
            }))
        },
    );
    prop_oneof![arbitrary_entries().prop_map(StatePayload::Entries), delta]
}

/// No cursor, or one naming any target at any offset.
fn arbitrary_cursor() -> impl Strategy<Value = Option<DeltaCursor>> {
    let cursor = (any::<u64>(), number(), any::<u128>(), number(), number()).prop_map(
        |(transfer, op, op_checksum, since, offset)| DeltaCursor {
            target: DeltaTarget {
                transfer,
                op: Op(op),
                op_checksum: EntryChecksum(op_checksum),
                since: Op(since),
            },
            offset,
        },
    );
    prop::option::of(cursor)
}

fn arbitrary_result() -> impl Strategy<Value = ReplyResult> {
    prop_oneof![
        arbitrary_bytes().prop_map(ReplyResult::Executed),
        Just(ReplyResult::Registered),
        Just(ReplyResult::SessionEvicted),
        arbitrary_bytes().prop_map(ReplyResult::Answered),
        Just(ReplyResult::NotPrimary),
        any::<u128>().prop_map(|cluster| ReplyResult::WrongCluster { cluster }),
    ]
}

/// A do_view_change whose suffix is exactly the ops after its commit, from an earlier view.
fn arbitrary_do_view_change() -> impl Strategy<Value = Message> {
    (
        1..NUMBER_MAX,
        number(),
        number().prop_map(|commit| commit.min(NUMBER_MAX - 8)),
        0..=5u64,
    )
        .prop_flat_map(|(view, last_normal_view, commit, count)| {
            let last_normal_view = last_normal_view % view;
            arbitrary_entries_from(commit + 1, count).prop_map(move |entries| {
                Message::DoViewChange(DoViewChange {
                    view: View(view),
                    last_normal_view: View(last_normal_view),
                    op: Op(commit + count),
                    commit: Op(commit),
                    entries,
                })
            })
        })
}

/// A start_view whose entries end at its op, with its commit at or below that op.
fn arbitrary_start_view() -> impl Strategy<Value = Message> {
    (number(), number(), arbitrary_entries()).prop_map(|(view, number, entries)| {
        let op = entries.last().map_or(number, |entry| entry.op.get());
        Message::StartView(StartView {
            view: View(view),
            op: Op(op),
            commit: Op(number.min(op)),
            entries,
        })
    })
}

fn arbitrary_message() -> impl Strategy<Value = Message> {
    let u = any::<u64>;
    let n = number;
    prop_oneof![
        (u(), u(), arbitrary_operation(), arbitrary_bytes()).prop_map(
            |(session, request, operation, body)| Message::Request(Request {
                session,
                request,
                operation,
                body
            })
        ),
        (any::<u128>(), u(), u(), u(), arbitrary_result()).prop_map(
            |(client, view, op, request, result)| Message::Reply(Reply {
                client,
                view: View(view),
                op: Op(op),
                request,
                result,
            })
        ),
        (n(), n(), arbitrary_entries(), u())
            .prop_filter("a prepare carries entries", |(_, _, entries, _)| !entries
                .is_empty())
            .prop_map(|(view, commit, entries, round)| Message::Prepare(Prepare {
                view: View(view),
                commit: Op(commit),
                entries,
                round
            })),
        (n(), n(), any::<u128>()).prop_map(|(view, op, checksum)| Message::PrepareOk(PrepareOk {
            view: View(view),
            op: Op(op),
            checksum: EntryChecksum(checksum)
        })),
        (n(), n(), u()).prop_map(|(view, commit, round)| Message::Commit(Commit {
            view: View(view),
            commit: Op(commit),
            round
        })),
        (u(), arbitrary_bytes())
            .prop_map(|(request, body)| Message::Query(Query { request, body })),
        (n(), 1..u64::MAX).prop_map(|(view, round)| Message::Confirm(Confirm {
            view: View(view),
            round
        })),
        n().prop_map(|view| Message::StartViewChange(StartViewChange { view: View(view) })),
        arbitrary_do_view_change(),
        arbitrary_start_view(),
        (n(), n(), n(), arbitrary_cursor()).prop_map(|(view, op, commit, cursor)| {
            Message::GetState(GetState {
                view: View(view),
                op: Op(op),
                commit: Op(commit),
                cursor,
            })
        }),
        (n(), n(), n(), any::<bool>(), arbitrary_payload()).prop_map(
            |(view, op, commit, normal, payload)| Message::NewState(NewState {
                view: View(view),
                op: Op(op),
                commit: Op(commit),
                normal,
                payload
            })
        ),
        u().prop_map(|nonce| Message::Recovery(Recovery { nonce })),
        (n(), u(), n(), n(), any::<bool>()).prop_map(|(view, nonce, op, commit, primary)| {
            Message::RecoveryResponse(RecoveryResponse {
                view: View(view),
                nonce,
                op: Op(op),
                commit: Op(commit),
                primary,
            })
        }),
    ]
}

fn arbitrary_envelope() -> impl Strategy<Value = Envelope> {
    let sender = prop_oneof![
        any::<u8>().prop_map(Sender::Replica),
        any::<u128>().prop_map(Sender::Client)
    ];
    (any::<u128>(), any::<u32>(), sender, arbitrary_message()).prop_map(
        |(cluster, epoch, sender, message)| {
            // Replies come only from replicas: their header's client field names the
            // client replied to.
            let sender = match (sender, &message) {
                (Sender::Client(client), Message::Reply(_)) => Sender::Replica(client as u8),
                _ => sender,
            };
            Envelope {
                cluster,
                epoch,
                sender,
                message,
            }
        },
    )
}

proptest! {
    #[test]
    fn round_trip(envelope in arbitrary_envelope()) {
        let bytes = encode(&envelope);
        prop_assert_eq!(bytes.len(), HEADER_SIZE + body_size(&envelope.message));
        prop_assert_eq!(frame_size(&bytes), Ok(Some(bytes.len())));
        prop_assert_eq!(decode_shared(&Bytes::from(bytes.clone())), Ok(envelope.clone()));
        prop_assert_eq!(decode(&bytes), Ok(envelope));
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = frame_size(&bytes);
        prop_assert!(decode(&bytes).is_err());
    }

    /// Garbage behind valid checksums reaches the body decoder: it must never panic, and
    /// whatever it accepts is exactly what encode produces.
    #[test]
    fn resealed_garbage_is_canonical(
        command in 0..=13u8,
        header in prop::collection::vec(prop_oneof![Just(0u8), Just(1), any::<u8>()], 48..=48),
        body in prop::collection::vec(prop_oneof![Just(0u8), Just(1), any::<u8>()], 0..300),
    ) {
        let mut bytes = vec![0; HEADER_SIZE];
        bytes[80..].copy_from_slice(&header);
        bytes[72..74].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        bytes[74] = command;
        bytes.extend_from_slice(&body);
        reseal(&mut bytes);
        if let Ok(envelope) = decode(&bytes) {
            prop_assert_eq!(encode(&envelope), bytes);
        }
    }

    /// A valid frame with some bytes overwritten and resealed: same property, but close
    /// enough to valid to reach deep into the body decoder.
    #[test]
    fn resealed_mutation_is_canonical(
        envelope in arbitrary_envelope(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode(&envelope);
        for (index, value) in edits {
            let position = 72 + index.index(bytes.len() - 72);
            bytes[position] = value;
        }
        reseal(&mut bytes);
        if let Ok(decoded) = decode(&bytes) {
            prop_assert_eq!(encode(&decoded), bytes);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn every_bit_flip_and_truncation_is_detected(envelope in arbitrary_envelope()) {
        assert_corruption_detected(&encode(&envelope));
    }

    /// The public entry encoding is the prepare body, and decoding takes exactly one whole,
    /// valid entry.
    #[test]
    fn one_entry_round_trips_and_every_flip_truncation_or_extension_is_rejected(
        entry in arbitrary_entry()
    ) {
        let mut bytes = Vec::new();
        encode_entry(&entry, &mut bytes);
        prop_assert_eq!(bytes.len(), entry_size(&entry));
        let prepare = envelope(
            Sender::Replica(0),
            Message::Prepare(Prepare { view: entry.view, commit: Op(0), entries: vec![entry.clone()], round: 0 }),
        );
        prop_assert_eq!(&encode(&prepare)[HEADER_SIZE + ENTRIES_COUNT_SIZE..], &bytes[..]);
        prop_assert_eq!(decode_entry(&bytes), Ok(entry));
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_entry(&flipped).is_err(), "bit {} flipped went unnoticed", bit);
        }
        for size in 0..bytes.len() {
            prop_assert!(decode_entry(&bytes[..size]).is_err(), "cut to {} bytes", size);
        }
        bytes.push(0);
        prop_assert_eq!(
            decode_entry(&bytes),
            Err(DecodeError::Malformed("trailing bytes after the entry"))
        );
    }
}

/// Decoding for a receiver admits only what that receiver may act on; each rejection names
/// its reason.
#[test]
fn the_receiver_admits_only_what_it_may_act_on() {
    let config = crate::config::Config::new(0xc1u128 << 100 | 0x5eed, 3);
    let replica = Receiver::replica(&config, 1);
    let client = Receiver::client(config.cluster, 3);
    let commit = |view| {
        Message::Commit(Commit {
            view,
            commit: Op(0),
            round: 0,
        })
    };
    let admit = |receiver: &Receiver, example: &Envelope| {
        super::decode(&encode(example), receiver).map(Verified::into_envelope)
    };
    let examples = examples();
    let reply = examples
        .iter()
        .find(|example| matches!(example.message, Message::Reply(_)))
        .unwrap();
    assert_eq!(admit(&client, reply).as_ref(), Ok(reply));
    assert_eq!(
        admit(&replica, reply),
        Err(DecodeError::OutOfPlace { name: "reply" })
    );
    let from_primary = envelope(Sender::Replica(0), commit(View(3)));
    assert_eq!(admit(&replica, &from_primary).as_ref(), Ok(&from_primary));
    assert_eq!(
        admit(&client, &from_primary),
        Err(DecodeError::OutOfPlace { name: "commit" })
    );
    let mut other_cluster = from_primary.clone();
    other_cluster.cluster ^= 1;
    assert!(matches!(
        admit(&replica, &other_cluster),
        Err(DecodeError::WrongCluster { .. })
    ));
    let mut other_epoch = from_primary.clone();
    other_epoch.epoch = 1;
    assert!(matches!(
        admit(&replica, &other_epoch),
        Err(DecodeError::WrongCluster { .. })
    ));
    for sender in [Sender::Replica(1), Sender::Replica(3), Sender::Client(5)] {
        assert_eq!(
            admit(&replica, &envelope(sender, commit(View(4)))),
            Err(DecodeError::BadSender {
                sender,
                name: "commit"
            }),
            "{sender:?}"
        );
    }
    assert_eq!(
        admit(&replica, &envelope(Sender::Replica(2), commit(View(3)))),
        Err(DecodeError::NotFromPrimary {
            sender: 2,
            view: View(3),
            name: "commit"
        })
    );
    let request = examples
        .iter()
        .find(|example| matches!(example.message, Message::Request(_)))
        .unwrap();
    assert_eq!(admit(&replica, request).as_ref(), Ok(request));
    let mut request_from_replica = request.clone();
    request_from_replica.sender = Sender::Replica(0);
    assert!(matches!(
        admit(&replica, &request_from_replica),
        Err(DecodeError::BadSender { .. })
    ));
}

/// A replica answers a client's request or query of another cluster with one header-sized
/// wrong-cluster reply in that cluster's name, which the client admits; anything else gets no
/// answer.
#[test]
fn a_client_frame_of_another_cluster_gets_a_wrong_cluster_reply() {
    let config = crate::config::Config::new(0xc1u128 << 100 | 0x5eed, 3);
    let replica = Receiver::replica(&config, 2);
    let other = config.cluster ^ 0xff;
    let in_cluster =
        |cluster, example: &Envelope| Bytes::from(encode(&in_cluster_envelope(cluster, example)));
    let request = &examples()[0];
    let query = &read_examples()[0];
    for (example, asked) in [(request, 5), (query, 9)] {
        let answer = replica
            .wrong_cluster(&in_cluster(other, example))
            .expect("answered");
        assert_eq!(answer.len(), HEADER_SIZE);
        let Sender::Client(client) = example.sender else {
            panic!("a client's frame")
        };
        let client_receiver = Receiver::client(other, 3);
        let verified = super::decode(&answer, &client_receiver).expect("the client admits it");
        assert_eq!(
            verified.into_envelope(),
            Envelope {
                cluster: other,
                epoch: 0,
                sender: Sender::Replica(2),
                message: Message::Reply(Reply {
                    client,
                    view: View(0),
                    op: Op(0),
                    request: asked,
                    result: ReplyResult::WrongCluster {
                        cluster: config.cluster
                    },
                }),
            }
        );
    }
    // Its own cluster, another epoch, a replica's frame, a client's frame that asks nothing,
    // a corrupt frame, and a client as receiver: no answer.
    assert_eq!(
        replica.wrong_cluster(&in_cluster(config.cluster, request)),
        None
    );
    let mut other_epoch = request.clone();
    other_epoch.cluster = other;
    other_epoch.epoch = 1;
    assert_eq!(
        replica.wrong_cluster(&Bytes::from(encode(&other_epoch))),
        None
    );
    let from_replica = examples()
        .into_iter()
        .find(|example| matches!(example.sender, Sender::Replica(_)))
        .unwrap();
    assert_eq!(
        replica.wrong_cluster(&in_cluster(other, &from_replica)),
        None
    );
    let reply_from_client = envelope(Sender::Client(7), read_examples()[1].message.clone());
    assert_eq!(
        replica.wrong_cluster(&in_cluster(other, &reply_from_client)),
        None
    );
    let mut corrupt = encode(&in_cluster_envelope(other, request));
    corrupt[HEADER_SIZE - 1] ^= 1;
    assert_eq!(replica.wrong_cluster(&Bytes::from(corrupt)), None);
    assert_eq!(replica.wrong_cluster(&Bytes::new()), None);
    let client = Receiver::client(config.cluster, 3);
    assert_eq!(client.wrong_cluster(&in_cluster(other, request)), None);
}

fn in_cluster_envelope(cluster: u128, example: &Envelope) -> Envelope {
    let mut example = example.clone();
    example.cluster = cluster;
    example
}
