//! The store's keys and its Functions library (`functions.lua`): loading it and calling it.

use crate::registry::store::StoreError;
use redis::aio::MultiplexedConnection;

/// The registry's library, loaded (replacing any older copy) on every new primary connection:
/// a promoted replica has it already (libraries replicate), a fresh server gets it.
pub const LIBRARY: &str = include_str!("functions.lua");

/// Every key, under one hash tag so a Redis Cluster keeps them in one slot.
pub const META: &str = "{thalassa}:meta";
pub const DEADLINES: &str = "{thalassa}:dl";
pub const EVENTS: &str = "{thalassa}:ev";
pub const REAPER: &str = "{thalassa}:reaper";
pub const KEYS: [&str; 4] = [META, DEADLINES, EVENTS, REAPER];

/// Stream entries as `XRANGE`/`XREVRANGE` return them: id and fields.
pub type StreamEntries = Vec<(String, std::collections::HashMap<String, redis::Value>)>;

/// Loads `library` (Lua source with its `#!lua name=` line), replacing an older copy.
pub async fn load(connection: &mut MultiplexedConnection, library: &str) -> Result<(), StoreError> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library)
        .query_async::<String>(connection)
        .await
        .map(|_| ())
        .map_err(|err| StoreError::Unreachable(format!("cannot load Redis functions: {err}")))
}

/// `FCALL <function> 4 <keys...>` with the arguments still to add.
pub fn fcall(function: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg(function).arg(KEYS.len());
    for key in KEYS {
        cmd.arg(key);
    }
    cmd
}

/// A stream id `MS-SEQ` as the feed's integer sequence number, `MS * 2^20 + SEQ`: numeric and
/// increasing like the stream, and far above the embedded store's `now_ms * 1000` numbering.
pub fn seq_of_stream_id(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    let ms: u64 = ms.parse().ok()?;
    let seq: u64 = seq.parse().ok()?;
    (seq < 1 << 20 && ms < 1 << 43).then_some(ms << 20 | seq)
}

/// The stream id of a feed sequence number (inverse of [`seq_of_stream_id`]).
pub fn stream_id_of_seq(seq: u64) -> String {
    format!("{}-{}", seq >> 20, seq & ((1 << 20) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_round_trip_and_keep_their_order() {
        let a = seq_of_stream_id("1796000000000-0").unwrap();
        let b = seq_of_stream_id("1796000000000-7").unwrap();
        let c = seq_of_stream_id("1796000000001-0").unwrap();
        assert!(a < b && b < c);
        assert!(a > 1_796_000_000_000 * 1000);
        assert_eq!(stream_id_of_seq(b), "1796000000000-7");
        for bad in ["", "1", "x-1", "1-x", "1-1048576", "-1", "1-"] {
            assert_eq!(seq_of_stream_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_library_registers_every_function_it_is_called_by() {
        for function in ["thalassa_upsert", "thalassa_remove", "thalassa_reap"] {
            assert!(LIBRARY.contains(&format!("register_function('{function}'")));
        }
    }
}
