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

/// Each server of `backend` and its current weight (`show servers state`), or `None` when the
/// socket does not answer.
pub async fn weights(
    admin: &Path,
    backend: &str,
) -> Option<std::collections::BTreeMap<String, u32>> {
    let mut stream = tokio::net::UnixStream::connect(admin).await.ok()?;
    let command = format!("show servers state {backend}\n");
    stream.write_all(command.as_bytes()).await.ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    // Columns: be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight ...
    Some(
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                Some((fields.get(3)?.to_string(), fields.get(7)?.parse().ok()?))
            })
            .collect(),
    )
}
