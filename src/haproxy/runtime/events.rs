//! A ring's new events as they are written (`show events <ring> -w -n`), on an admin-socket
//! connection of its own in one-shot mode: HAProxy writes each new event as a line until the
//! client closes. The connection cannot carry anything else (any input ends the stream), and
//! the write side must stay open (a half-close ends it too). After a reload the stream stays
//! with the old worker, which writes nothing more: the caller opens a new one.

use super::{RuntimeClient, RuntimeError, validate_name};
use futures_util::StreamExt;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

/// Longer lines than the ring's `maxlen` (1024 in haproxy/base.cfg) are not HAProxy's.
const MAX_EVENT_BYTES: usize = 4096;

pub struct EventStream {
    lines: FramedRead<tokio::net::unix::OwnedReadHalf, LinesCodec>,
    /// Held, never written after the command: dropping it would half-close the connection.
    _write: OwnedWriteHalf,
}

impl EventStream {
    /// The next event line; `None` when HAProxy closed the stream (its worker exited, or the
    /// ring is unknown: then the one line before the end said `No such event sink`).
    pub async fn next_line(&mut self) -> Result<Option<String>, RuntimeError> {
        match self.lines.next().await {
            None => Ok(None),
            Some(Ok(line)) => Ok(Some(line)),
            Some(Err(LinesCodecError::Io(err))) => Err(RuntimeError::Io(err)),
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => Err(RuntimeError::Io(
                std::io::Error::other(format!("an event line longer than {MAX_EVENT_BYTES} bytes")),
            )),
        }
    }
}

impl RuntimeClient {
    /// Starts streaming the events written to `ring` from now on. Waits for a reload in
    /// progress, so the stream starts on the current worker.
    #[allow(
        clippy::disallowed_methods,
        reason = "the runtime client opens the admin socket"
    )]
    pub async fn stream_events(&self, ring: &str) -> Result<EventStream, RuntimeError> {
        let ring = validate_name("ring name", ring)?;
        let _open = self.group.gate.read().await;
        let stream = UnixStream::connect(self.socket_path())
            .await
            .map_err(|source| RuntimeError::Connect {
                path: self.socket_path().to_owned(),
                source,
            })?;
        let (read, mut write) = stream.into_split();
        let command = format!("show events {ring} -w -n\n");
        tokio::io::AsyncWriteExt::write_all(&mut write, command.as_bytes())
            .await
            .map_err(RuntimeError::Io)?;
        Ok(EventStream {
            lines: FramedRead::new(read, LinesCodec::new_with_max_length(MAX_EVENT_BYTES)),
            _write: write,
        })
    }
}
