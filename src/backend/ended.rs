//! A request body that says when it has been sent in full (or abandoned), so the
//! backend's response timer can start then.

use crate::http::{Body, BoxError, Frames};
use bytes::Bytes;
use http_body::{Body as HttpBody, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

pub struct Ended {
    body: Body,
    /// Fired (by sending, or by being dropped) once the body is done.
    done: Option<oneshot::Sender<()>>,
}

impl Ended {
    pub fn wrap(body: Body, done: oneshot::Sender<()>) -> Body {
        let mut me = Ended {
            body,
            done: Some(done),
        };
        if me.body.is_end_stream() {
            me.fire();
        }
        me.boxed()
    }

    fn fire(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

impl HttpBody for Ended {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Frames {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) || self.body.is_end_stream() {
            self.fire();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
