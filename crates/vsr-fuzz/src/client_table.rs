//! The `client_table` target: the client table's decoding, alone and as a snapshot's front.
//!
//! Input: the bytes of a client table (anything may follow it). Property: a decoded table
//! decodes again from its re-encoding, to the same table, taking all of it; the input read as
//! a whole snapshot decodes without panicking.

use vsr_kv::KvStore;

/// Runs one input; see the module docs.
pub fn client_table(data: &[u8]) {
    if let Ok((encoded, used)) = vsr::fuzzing::client_table(data) {
        assert!(used <= data.len(), "a table takes at most its bytes");
        let again = vsr::fuzzing::client_table(&encoded).expect("a re-encoded table decodes");
        assert_eq!(
            again,
            (encoded.clone(), encoded.len()),
            "a table round-trips"
        );
    }
    let _ = vsr::fuzzing::snapshot::<KvStore>(data);
}
