//! A small, total server-sent-events decoder (the WHATWG event-stream rules the registry's
//! follower needs): lines end in LF, CR or CRLF, even split across chunks; `:` lines are
//! comments; `data:` lines join with newlines; a blank line dispatches; `id:` persists.

/// One dispatched message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseMessage {
    /// The last event id seen on the stream (it persists across messages, per the spec).
    pub id: Option<String>,
    /// The `event:` name, `message` when none was given.
    pub event: String,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("event-stream line longer than {0} bytes")]
    LineTooLong(usize),
}

/// Longest line accepted. A snapshot of 100,000 registrations is one ~25 MB `data:` line.
pub const MAX_LINE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug)]
pub struct SseDecoder {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF in the next one belongs to it.
    after_cr: bool,
    last_id: Option<String>,
    event: String,
    data: String,
    has_data: bool,
    max_line: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new(MAX_LINE_BYTES)
    }
}

impl SseDecoder {
    pub fn new(max_line: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            after_cr: false,
            last_id: None,
            event: String::new(),
            data: String::new(),
            has_data: false,
            max_line,
        }
    }

    /// Feeds bytes; returns every message completed by them.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<SseMessage>, SseError> {
        let mut messages = Vec::new();
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(end) = chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.extend_line(&chunk[..end])?;
            let line = std::mem::take(&mut self.line);
            if let Some(message) = self.process_line(&line) {
                messages.push(message);
            }
            let terminator = chunk[end];
            chunk = &chunk[end + 1..];
            if terminator == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.extend_line(chunk)?;
        Ok(messages)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > self.max_line {
            self.line.clear();
            return Err(SseError::LineTooLong(self.max_line));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process_line(&mut self, line: &[u8]) -> Option<SseMessage> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            // `retry` and unknown fields are ignored.
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseMessage> {
        let event = std::mem::take(&mut self.event);
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseMessage {
            id: self.last_id.clone(),
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: Option<&str>, event: &str, data: &str) -> SseMessage {
        SseMessage {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    /// Decodes `chunks` fed one after another.
    fn check(chunks: &[&str], expected: &[SseMessage]) {
        let mut decoder = SseDecoder::default();
        let mut got = Vec::new();
        for chunk in chunks {
            got.extend(decoder.push(chunk.as_bytes()).unwrap());
        }
        assert_eq!(got, expected, "{chunks:?}");
    }

    #[test]
    fn messages() {
        let one = || msg(Some("7"), "online", "{\"a\":1}");
        check(&["id: 7\nevent: online\ndata: {\"a\":1}\n\n"], &[one()]);
        check(
            &["id: 7\r\nevent: online\r\ndata: {\"a\":1}\r\n\r\n"],
            &[one()],
        );
        check(&["id: 7\revent: online\rdata: {\"a\":1}\r\r"], &[one()]);
        // Split anywhere, including between CR and LF.
        check(
            &[
                "id: 7\r",
                "\nevent: onl",
                "ine\ndata: {\"a\"",
                ":1}\n",
                "\n",
            ],
            &[one()],
        );
        check(&[": keepalive\n\n"], &[]);
        check(&["data: a\ndata: b\n\n"], &[msg(None, "message", "a\nb")]);
        check(&["data\n\n"], &[msg(None, "message", "")]);
        check(&["data:x\n\n"], &[msg(None, "message", "x")]);
        check(
            &["event: x\n\n", "data: y\n\n"],
            &[msg(None, "message", "y")],
        );
        check(
            &["id: 1\ndata: a\n\ndata: b\n\n"],
            &[
                msg(Some("1"), "message", "a"),
                msg(Some("1"), "message", "b"),
            ],
        );
        check(&["retry: 10\nunknown: z\n\n"], &[]);
        check(&["data: never finished"], &[]);
    }

    #[test]
    fn overlong_lines_are_an_error_not_a_crash() {
        let mut decoder = SseDecoder::new(8);
        assert_eq!(
            decoder.push(b"data: 123456789\n"),
            Err(SseError::LineTooLong(8))
        );
    }
}
