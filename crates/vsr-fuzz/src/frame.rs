//! The `frame` target: `vsr::wire::decode` and `decode_shared` for a replica and for a client.
//!
//! Input: one control byte, then the frame. Control bits 0–1 pick the receiver (replica 0, 1
//! or 2 of the cluster, or a client); bit 2 seals the frame ([`crate::seal::frame`]) first.
//!
//! Property: a frame that decodes is exactly the encoding of the envelope it decodes to (the
//! wire format gives each message one encoding), and both decoders agree. A state-transfer
//! chunk (new_state with a delta) decodes here; `state_transfer` covers what applies it.

use bytes::Bytes;
use vsr::Config;
use vsr::wire::{self, Receiver};

use crate::{CLUSTER, REPLICA_COUNT, seal};

/// Control bit: seal the frame before decoding.
pub(crate) const SEAL: u8 = 0b100;

/// The receiver control bits 0–1 pick.
pub(crate) fn receiver(control: u8) -> Receiver {
    match control & 0b11 {
        3 => Receiver::client(CLUSTER, REPLICA_COUNT),
        index => Receiver::replica(&Config::new(CLUSTER, REPLICA_COUNT), index),
    }
}

/// Runs one input; see the module docs.
pub fn frame(data: &[u8]) {
    let Some((&control, frame)) = data.split_first() else {
        return;
    };
    let receiver = receiver(control);
    let mut frame = frame.to_vec();
    if control & SEAL != 0 {
        seal::frame(&mut frame);
    }
    let size = wire::frame_size(&frame);
    let frame = Bytes::from(frame);
    let shared = wire::decode_shared(&frame, &receiver);
    assert_eq!(
        wire::decode(&frame, &receiver),
        shared,
        "decode and decode_shared disagree"
    );
    let Ok(verified) = shared else {
        return;
    };
    assert_eq!(size, Ok(Some(frame.len())), "frame_size of a valid frame");
    let envelope = verified.envelope();
    let encoded = wire::encode(envelope);
    assert_eq!(encoded, frame, "a valid frame is its envelope's encoding");
    assert_eq!(
        wire::body_size(&envelope.message),
        frame.len() - wire::HEADER_SIZE
    );
}
