//! Handing an upload to the blob store while it is still arriving, and holding back its end
//! until the push has been checked.
//!
//! A push used to be received, then validated, then read again and sent to the blob store, one
//! stage after the other. With a relay the blob store takes each chunk as it arrives (S3 parts
//! go out while the client is still sending), and the body's end is only given once the spooled
//! copy has been validated: [`RelaySender::commit`] ends the stream and the store publishes the
//! object; [`RelaySender::abandon`], or dropping the sender, ends it with an error and the
//! store discards everything (S3 aborts the multipart upload, the local store removes its
//! temporary file), so a refused or broken push never leaves an object behind.

use bytes::Bytes;
use cuttle_blob::ByteStream;
use tokio::sync::mpsc;

/// Chunks buffered between the request and the blob store. The store does its own buffering
/// (a whole S3 part), so a few chunks (the HTTP body's, up to a few hundred KB each) are enough
/// to keep both sides busy.
const CAPACITY: usize = 8;

enum Piece {
    Data(Bytes),
    End,
    Failed(String),
}

/// The request's end of a relay.
pub struct RelaySender {
    sender: mpsc::Sender<Piece>,
}

/// The blob store stopped reading: its put failed, and its error says why.
#[derive(Debug, thiserror::Error)]
#[error("the blob store stopped reading the upload")]
pub struct StoreStopped;

/// Creates a relay: chunks sent on the [`RelaySender`] come out of the [`ByteStream`], which is
/// given to `BlobStore::put`.
pub fn relay() -> (RelaySender, ByteStream) {
    let (sender, receiver) = mpsc::channel(CAPACITY);
    let stream = futures::stream::unfold(Some(receiver), |state| async move {
        let mut receiver = state?;
        match receiver.recv().await {
            Some(Piece::Data(chunk)) => Some((Ok(chunk), Some(receiver))),
            Some(Piece::End) => None,
            Some(Piece::Failed(reason)) => Some((Err(std::io::Error::other(reason)), None)),
            // The sender went away without committing: the push was cut short.
            None => Some((
                Err(std::io::Error::other(
                    "the upload ended before the push was complete",
                )),
                None,
            )),
        }
    });
    (RelaySender { sender }, Box::pin(stream))
}

impl RelaySender {
    /// Passes one chunk on; waits while the store is behind.
    pub async fn send(&self, chunk: Bytes) -> Result<(), StoreStopped> {
        self.sender
            .send(Piece::Data(chunk))
            .await
            .map_err(|_| StoreStopped)
    }

    /// Ends the body: the store publishes the object.
    pub async fn commit(self) -> Result<(), StoreStopped> {
        self.sender.send(Piece::End).await.map_err(|_| StoreStopped)
    }

    /// Ends the body with an error: the store discards what it received.
    pub async fn abandon(self, reason: &str) {
        // A store that already stopped has discarded everything anyway.
        let _ = self.sender.send(Piece::Failed(reason.to_owned())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cuttle_blob::{BlobStore, LocalBlobStore};
    use futures::StreamExt;

    async fn collect(mut stream: ByteStream) -> (Vec<u8>, Option<String>) {
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(err) => return (bytes, Some(err.to_string())),
            }
        }
        (bytes, None)
    }

    #[tokio::test]
    async fn a_committed_relay_ends_cleanly_after_every_chunk() {
        let (sender, stream) = relay();
        let reader = tokio::spawn(collect(stream));
        sender.send(Bytes::from_static(b"hello ")).await.unwrap();
        sender.send(Bytes::from_static(b"world")).await.unwrap();
        sender.commit().await.unwrap();
        assert_eq!(reader.await.unwrap(), (b"hello world".to_vec(), None));
    }

    #[tokio::test]
    async fn an_abandoned_or_dropped_relay_ends_with_an_error() {
        let (sender, stream) = relay();
        let reader = tokio::spawn(collect(stream));
        sender.send(Bytes::from_static(b"part")).await.unwrap();
        sender.abandon("the archive is truncated").await;
        let (bytes, error) = reader.await.unwrap();
        assert_eq!(bytes, b"part");
        assert_eq!(error.as_deref(), Some("the archive is truncated"));

        let (sender, stream) = relay();
        let reader = tokio::spawn(collect(stream));
        sender.send(Bytes::from_static(b"part")).await.unwrap();
        drop(sender);
        let (_, error) = reader.await.unwrap();
        assert!(error.unwrap().contains("before the push was complete"));
    }

    #[tokio::test]
    async fn a_store_that_stops_reading_is_reported_to_the_sender() {
        let (sender, stream) = relay();
        drop(stream);
        assert!(sender.send(Bytes::from_static(b"x")).await.is_err());
    }

    #[tokio::test]
    async fn the_store_publishes_only_a_committed_relay() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::new(dir.path()).unwrap();

        let (sender, stream) = relay();
        let send = async {
            sender.send(Bytes::from_static(b"kept")).await.unwrap();
            sender.commit().await.unwrap();
        };
        let (put, ()) = tokio::join!(store.put("packages/kept", stream), send);
        assert_eq!(put.unwrap().size, 4);

        let (sender, stream) = relay();
        let send = async {
            sender.send(Bytes::from_static(b"refused")).await.unwrap();
            sender.abandon("refused").await;
        };
        let (put, ()) = tokio::join!(store.put("packages/refused", stream), send);
        assert!(put.is_err());
        assert!(store.head("packages/refused").await.unwrap().is_none());
        let keys: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|object| object.key)
            .collect();
        assert_eq!(keys, ["packages/kept"]);
    }
}
