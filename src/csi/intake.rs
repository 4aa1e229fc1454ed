//! What the driver holds of a request before it can charge it: the bytes
//! of gRPC messages being received and decoded. No volume exists yet to
//! charge them to, so they are bounded for the whole node instead.
//!
//! Every request's body reserves its message's length (read from the
//! gRPC frame's 5-byte header, capped at [`MAX_REQUEST_BYTES`]) from one
//! budget of [`INTAKE_BYTES`] before any more of it is read, and gives
//! the reservation back when tonic has decoded it and dropped the body. A
//! request that finds the budget spent waits, holding only what HTTP/2
//! flow control lets its sender push ahead ([`WINDOW_BYTES`] per stream
//! and per connection), so any number of large requests at once cost at
//! most the budget plus a window each, not their sizes. Kubelet's
//! requests are a few kilobytes: they reserve that and never wait on one
//! another in practice.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;

use super::MAX_REQUEST_BYTES;

/// Bytes of requests the driver receives and decodes at once: two of the
/// largest requests it accepts. Part of the reserve the memory model
/// leaves uncharged (`volume::memory`).
pub const INTAKE_BYTES: usize = 2 * (MAX_REQUEST_BYTES + HEADER_BYTES);

/// HTTP/2's flow-control windows the server grants, per stream and per
/// connection: what a sender may push before the driver reads it.
pub const WINDOW_BYTES: u32 = 64 * 1024;

/// A gRPC message's header: compression flag and 4-byte length.
const HEADER_BYTES: usize = 5;

/// The node's intake budget, shared by every request.
#[derive(Clone, Debug)]
pub struct IntakeLayer {
    budget: Arc<Semaphore>,
}

impl IntakeLayer {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self {
            budget: Arc::new(Semaphore::new(bytes)),
        }
    }
}

impl<S> tower::Layer<S> for IntakeLayer {
    type Service = Intake<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Intake {
            inner,
            budget: self.budget.clone(),
        }
    }
}

/// The service behind [`IntakeLayer`]: hands the inner service each
/// request with its body budgeted.
#[derive(Clone, Debug)]
pub struct Intake<S> {
    inner: S,
    budget: Arc<Semaphore>,
}

impl<S> tower::Service<http::Request<Body>> for Intake<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let budget = self.budget.clone();
        self.inner
            .call(request.map(|body| Body::new(Budgeted::new(body, budget))))
    }
}

type Acquire =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, tokio::sync::AcquireError>> + Send>>;

enum State {
    /// Reading the message's header (the bytes seen so far).
    Header(Vec<u8>),
    /// Waiting for the reservation, with the frame that carried the header.
    Reserving(Acquire, Option<Frame<Bytes>>),
    /// Reserved: the rest passes through; the reservation is held until
    /// the body is dropped.
    Reserved { _permit: OwnedSemaphorePermit },
    /// Nothing to reserve (a body with no message, or the budget closed).
    Free,
}

/// A request body that reserves its message's length before it is read.
pub struct Budgeted {
    inner: Body,
    budget: Arc<Semaphore>,
    state: State,
}

impl Budgeted {
    fn new(inner: Body, budget: Arc<Semaphore>) -> Self {
        Self {
            inner,
            budget,
            state: State::Header(Vec::with_capacity(HEADER_BYTES)),
        }
    }

    /// Notes the header bytes of `data`; once all five are known, starts
    /// the reservation of the message's length.
    fn read_header(&mut self, data: &Bytes) -> Option<Acquire> {
        let State::Header(seen) = &mut self.state else {
            return None;
        };
        let wanted = HEADER_BYTES - seen.len();
        seen.extend_from_slice(&data[..data.len().min(wanted)]);
        if seen.len() < HEADER_BYTES {
            return None;
        }
        let length = u32::from_be_bytes([seen[1], seen[2], seen[3], seen[4]]);
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        let bytes = length.min(MAX_REQUEST_BYTES) + HEADER_BYTES;
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        Some(Box::pin(self.budget.clone().acquire_many_owned(permits)))
    }
}

impl http_body::Body for Budgeted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Reserving(acquire, parked) => {
                    let permit = std::task::ready!(acquire.as_mut().poll(cx));
                    let frame = parked.take();
                    this.state = permit.map_or(State::Free, |p| State::Reserved { _permit: p });
                    return Poll::Ready(frame.map(Ok));
                }
                State::Header(_) => {
                    let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
                    let Some(Ok(frame)) = frame else {
                        return Poll::Ready(frame);
                    };
                    let Some(data) = frame.data_ref() else {
                        return Poll::Ready(Some(Ok(frame)));
                    };
                    match this.read_header(data) {
                        // Still within the header: pass the few bytes on.
                        None => return Poll::Ready(Some(Ok(frame))),
                        Some(acquire) => this.state = State::Reserving(acquire, Some(frame)),
                    }
                }
                State::Reserved { .. } | State::Free => {
                    return Pin::new(&mut this.inner).poll_frame(cx);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !matches!(self.state, State::Reserving(..)) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt as _;

    use super::*;

    /// A gRPC message of `len` bytes, in frames of at most 64 KiB.
    fn message(len: usize) -> Body {
        let mut bytes = vec![0u8; HEADER_BYTES + len];
        bytes[1..5].copy_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = bytes
            .chunks(64 * 1024)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    /// Two messages larger than half the budget: the second reads no more
    /// than its first frame until the first is dropped, then all of it.
    #[tokio::test]
    async fn a_message_waits_for_the_bytes_another_holds() {
        let budget = Arc::new(Semaphore::new(3 * 1024 * 1024));
        let first = Budgeted::new(message(2 * 1024 * 1024), budget.clone());
        let collected = first.collect().await.unwrap().to_bytes();
        assert_eq!(collected.len(), HEADER_BYTES + 2 * 1024 * 1024);
        // The first body is gone with its reservation: a third may start.
        assert_eq!(budget.available_permits(), 3 * 1024 * 1024);

        let mut held = Budgeted::new(message(2 * 1024 * 1024), budget.clone());
        let frame = held.frame().await.unwrap().unwrap();
        assert!(frame.is_data());
        let mut waiting = Budgeted::new(message(2 * 1024 * 1024), budget.clone());
        let stalled = tokio::time::timeout(Duration::from_millis(50), waiting.frame()).await;
        assert!(stalled.is_err(), "the second message waits for the budget");
        drop(held);
        let rest = waiting.collect().await.unwrap().to_bytes();
        assert_eq!(rest.len(), HEADER_BYTES + 2 * 1024 * 1024);
    }

    /// A length beyond the largest request reserves only that much (tonic
    /// refuses the message itself); a tiny message reserves its size.
    #[tokio::test]
    async fn reservations_are_capped_and_sized() {
        let budget = Arc::new(Semaphore::new(INTAKE_BYTES));
        let mut huge = Budgeted::new(message(16), budget.clone());
        // Forge a header announcing 1 GiB.
        huge.state = State::Header(Vec::new());
        let mut header = vec![0u8; HEADER_BYTES];
        header[1..5].copy_from_slice(&(1u32 << 30).to_be_bytes());
        let acquire = huge.read_header(&Bytes::from(header)).unwrap();
        let permit = acquire.await.unwrap();
        assert_eq!(permit.num_permits(), MAX_REQUEST_BYTES + HEADER_BYTES);
        drop(permit);
        let mut small = Budgeted::new(message(100), budget.clone());
        let _ = small.frame().await.unwrap().unwrap();
        assert_eq!(
            budget.available_permits(),
            INTAKE_BYTES - 100 - HEADER_BYTES
        );
    }
}
