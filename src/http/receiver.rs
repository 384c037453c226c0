//! A tokio channel as the `Stream` that `StreamBody` takes: bodies produced by a task
//! (progress events, S3 objects) reach hyper through it. Its own module, so the body
//! wrappers and the producers do not import each other.

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Adapts a tokio receiver to the `Stream` that `StreamBody` takes.
pub struct ReceiverStream<T>(pub mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}
