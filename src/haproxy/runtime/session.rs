//! One stats-socket connection in `prompt` mode: every command's reply ends with `\n> `, so
//! several pipelined commands (one per line) can share one round trip and the replies
//! are split by counting prompts.

use std::io;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PROMPT: &[u8] = b"\n> ";
/// `show stat` is about 230 bytes per server; this bounds memory against a runaway reply.
const MAX_REPLY_BYTES: usize = 64 << 20;

#[derive(Debug)]
pub(super) struct Session {
    stream: UnixStream,
    buffer: Vec<u8>,
}

/// How an exchange failed, and whether the commands may have run.
#[derive(Debug)]
pub(super) struct ExchangeError {
    pub(super) source: io::Error,
    /// True when not a byte of reply arrived: HAProxy did not run anything we can see, so
    /// the caller may retry on a fresh connection (the usual case is an idle connection the
    /// worker closed after `stats timeout`, or an old worker that finished).
    pub(super) nothing_received: bool,
}

impl Session {
    /// Connects and switches to prompt mode.
    #[allow(
        clippy::disallowed_methods,
        reason = "the runtime client opens the admin socket"
    )]
    pub(super) async fn open(path: &Path) -> io::Result<Session> {
        let stream = UnixStream::connect(path).await?;
        let mut session = Session {
            stream,
            buffer: Vec::with_capacity(4096),
        };
        session
            .exchange(b"prompt\n", 1)
            .await
            .map_err(|err| err.source)?;
        Ok(session)
    }

    /// Writes `request` (one or more complete lines) and reads until `replies` prompts have
    /// arrived. Returns one text per prompt, without the prompt and trailing newlines.
    pub(super) async fn exchange(
        &mut self,
        request: &[u8],
        replies: usize,
    ) -> Result<Vec<String>, ExchangeError> {
        self.buffer.clear();
        if let Err(source) = self.stream.write_all(request).await {
            return Err(ExchangeError {
                source,
                nothing_received: true,
            });
        }
        let mut texts = Vec::with_capacity(replies);
        let mut reply_start = 0;
        let mut scan_from = 0;
        let mut chunk = [0u8; 16 * 1024];
        while texts.len() < replies {
            // Every complete prompt already buffered closes one reply.
            while texts.len() < replies {
                match find(&self.buffer[scan_from..], PROMPT) {
                    Some(offset) => {
                        let end = scan_from + offset;
                        texts.push(reply_text(&self.buffer[reply_start..end]));
                        reply_start = end + PROMPT.len();
                        scan_from = reply_start;
                    }
                    None => {
                        // A prompt may straddle two reads: rescan its first bytes next time.
                        scan_from = self
                            .buffer
                            .len()
                            .saturating_sub(PROMPT.len() - 1)
                            .max(reply_start);
                        break;
                    }
                }
            }
            if texts.len() == replies {
                break;
            }
            let read = self.stream.read(&mut chunk).await;
            let nothing_received = self.buffer.is_empty();
            match read {
                Ok(0) => {
                    return Err(ExchangeError {
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "haproxy closed the admin connection",
                        ),
                        nothing_received,
                    });
                }
                Ok(n) => {
                    if self.buffer.len() + n > MAX_REPLY_BYTES {
                        return Err(ExchangeError {
                            source: io::Error::new(
                                io::ErrorKind::InvalidData,
                                "admin socket reply exceeds 64 MiB",
                            ),
                            nothing_received: false,
                        });
                    }
                    self.buffer.extend_from_slice(&chunk[..n]);
                }
                Err(source) => {
                    return Err(ExchangeError {
                        source,
                        nothing_received,
                    });
                }
            }
        }
        Ok(texts)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn reply_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches('\n')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake admin socket: answers `prompt` with a prompt, then replays `script` pieces
    /// (with a flush between them, to split prompts across reads).
    async fn fake_worker(path: &Path, script: Vec<&'static [u8]>) {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut line = [0u8; 7];
            stream.read_exact(&mut line).await.unwrap();
            assert_eq!(&line, b"prompt\n");
            stream.write_all(b"\n> ").await.unwrap();
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request).await.unwrap();
            for piece in script {
                stream.write_all(piece).await.unwrap();
                stream.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        });
    }

    #[tokio::test]
    async fn splits_replies_by_prompt_even_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        fake_worker(
            &path,
            vec![
                b"\n> No such server.\n\n",
                b"> New server registered.\n\n>",
                b" 1\n# be_id be_name\n3 be\n\n> ",
            ],
        )
        .await;
        let mut session = Session::open(&path).await.unwrap();
        let replies = session.exchange(b"a;b;c;d\n", 4).await.unwrap();
        assert_eq!(
            replies,
            vec![
                "",
                "No such server.",
                "New server registered.",
                "1\n# be_id be_name\n3 be"
            ]
        );
    }

    #[tokio::test]
    async fn eof_before_any_reply_is_retryable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        fake_worker(&path, vec![]).await;
        let mut session = Session::open(&path).await.unwrap();
        let err = session.exchange(b"show info\n", 1).await.unwrap_err();
        assert!(err.nothing_received, "{err:?}");
        assert_eq!(err.source.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn eof_mid_reply_is_not_retryable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        fake_worker(&path, vec![b"\n> half a rep"]).await;
        let mut session = Session::open(&path).await.unwrap();
        let err = session.exchange(b"a;b\n", 2).await.unwrap_err();
        assert!(!err.nothing_received, "{err:?}");
    }
}
