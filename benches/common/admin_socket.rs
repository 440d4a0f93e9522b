//! HAProxy's admin socket as the benches read it.
#![allow(dead_code)] // each bench uses a different subset

use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether `server` is in `backend` of the HAProxy behind `admin` (`show servers state`).
pub async fn present(admin: &Path, backend: &str, server: &str) -> bool {
    let Ok(mut stream) = tokio::net::UnixStream::connect(admin).await else {
        return false;
    };
    let command = format!("show servers state {backend}\n");
    if stream.write_all(command.as_bytes()).await.is_err() {
        return false;
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    text.split_whitespace().any(|word| word == server)
}
