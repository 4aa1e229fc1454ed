//! What the driver holds of a request before it can charge it: the bytes
//! of gRPC messages being received and decoded. No volume exists yet to
//! charge them to, so they are bounded for the whole node instead.
//!
//! Every request's body reserves [`EXPANSION`] times its message's
//! length (read from the gRPC frame's 5-byte header, capped at
//! [`MAX_REQUEST_BYTES`]: the bytes, and the decoded request beside them,
//! whose maps weigh several times their bytes) from one budget of
//! [`INTAKE_BYTES`] before any more of it is read. The reservation is kept
//! in the request's [`IntakeSlot`] until the handler has checked the
//! request and let go of it (`csi::node`), or until the request is
//! dropped. A request that finds the budget spent waits, holding only what
//! HTTP/2 flow control lets its sender push ahead ([`WINDOW_BYTES`] per
//! stream and per connection), so any number of large requests at once
//! cost at most the budget plus a window each, not their sizes. Kubelet's
//! requests are a few kilobytes: they reserve that and never wait on one
//! another in practice; requests near the largest are taken one at a
//! time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;

use super::MAX_REQUEST_BYTES;

/// What a request is reserved at, per byte of its message: its bytes, its
/// decoded form and the handler's check of it. A map of the shortest keys
/// decodes to about seven times its bytes (each entry two `String`s and a
/// slot of the table, for about ten bytes on the wire), half as much again
/// while the table grows, and its check reads it: one such request of
/// 1.9 MB was measured at 24 MiB (`tests/hostile_tenants`).
pub const EXPANSION: usize = 12;

/// Bytes of requests the driver receives, decodes and checks at once: the
/// largest request it accepts, at [`EXPANSION`] times its size; smaller
/// ones share it. Part of the reserve the memory model leaves uncharged
/// (`volume::memory`).
pub const INTAKE_BYTES: usize = EXPANSION * (MAX_REQUEST_BYTES + HEADER_BYTES);

/// A request's reservation of the intake budget, in its extensions: the
/// body puts it here once taken, and it is given back when the last
/// holder lets go (the handler, once it has checked the request).
#[derive(Clone, Debug, Default)]
pub struct IntakeSlot(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

impl IntakeSlot {
    fn hold(&self, permit: OwnedSemaphorePermit) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(permit);
    }
}

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

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let budget = self.budget.clone();
        let slot = IntakeSlot::default();
        request.extensions_mut().insert(slot.clone());
        self.inner
            .call(request.map(|body| Body::new(Budgeted::new(body, budget, slot))))
    }
}

type Acquire =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, tokio::sync::AcquireError>> + Send>>;

enum State {
    /// Reading the message's header (the bytes seen so far).
    Header(Vec<u8>),
    /// Waiting for the reservation, with the frame that carried the header.
    Reserving(Acquire, Option<Frame<Bytes>>),
    /// Reserved (the reservation is in the request's slot): the rest
    /// passes through.
    Reserved,
    /// Nothing to reserve (a body with no message, or the budget closed).
    Free,
}

/// A request body that reserves its message's length before it is read.
pub struct Budgeted {
    inner: Body,
    budget: Arc<Semaphore>,
    slot: IntakeSlot,
    state: State,
}

impl Budgeted {
    fn new(inner: Body, budget: Arc<Semaphore>, slot: IntakeSlot) -> Self {
        Self {
            inner,
            budget,
            slot,
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
        let bytes = EXPANSION * (length.min(MAX_REQUEST_BYTES) + HEADER_BYTES);
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
                    this.state = match permit {
                        Ok(permit) => {
                            this.slot.hold(permit);
                            State::Reserved
                        }
                        Err(_) => State::Free,
                    };
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
                State::Reserved | State::Free => {
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

    /// A message reserves `EXPANSION` times its length, kept in its slot after the
    /// body is read and dropped, until the last holder of the slot lets go;
    /// another message that does not fit meanwhile reads no more than its
    /// first frame.
    #[tokio::test]
    async fn a_message_waits_for_the_bytes_another_holds() {
        const MIB: usize = 1024 * 1024;
        let budget = Arc::new(Semaphore::new(EXPANSION * 5 * MIB / 2));
        let slot = IntakeSlot::default();
        let first = Budgeted::new(message(2 * MIB), budget.clone(), slot.clone());
        let collected = first.collect().await.unwrap().to_bytes();
        assert_eq!(collected.len(), HEADER_BYTES + 2 * MIB);
        // The body is gone; its request (the handler) still holds the slot.
        assert_eq!(
            budget.available_permits(),
            EXPANSION * 5 * MIB / 2 - EXPANSION * (2 * MIB + HEADER_BYTES)
        );

        let mut waiting = Budgeted::new(message(2 * MIB), budget.clone(), IntakeSlot::default());
        let stalled = tokio::time::timeout(Duration::from_millis(50), waiting.frame()).await;
        assert!(stalled.is_err(), "the second message waits for the budget");
        drop(slot);
        let rest = waiting.collect().await.unwrap().to_bytes();
        assert_eq!(rest.len(), HEADER_BYTES + 2 * MIB);
    }

    /// A length beyond the largest request reserves only as much as the
    /// largest (tonic refuses the message itself); a small message
    /// reserves `EXPANSION` times its size.
    #[tokio::test]
    async fn reservations_are_capped_and_sized() {
        let budget = Arc::new(Semaphore::new(INTAKE_BYTES));
        let mut huge = Budgeted::new(message(16), budget.clone(), IntakeSlot::default());
        // A header announcing 1 GiB.
        let mut header = vec![0u8; HEADER_BYTES];
        header[1..5].copy_from_slice(&(1u32 << 30).to_be_bytes());
        let acquire = huge.read_header(&Bytes::from(header)).unwrap();
        let permit = acquire.await.unwrap();
        assert_eq!(permit.num_permits(), INTAKE_BYTES);
        drop(permit);
        let slot = IntakeSlot::default();
        let mut small = Budgeted::new(message(100), budget.clone(), slot.clone());
        let _ = small.frame().await.unwrap().unwrap();
        drop(small);
        assert_eq!(
            budget.available_permits(),
            INTAKE_BYTES - EXPANSION * (100 + HEADER_BYTES)
        );
        drop(slot);
        assert_eq!(budget.available_permits(), INTAKE_BYTES);
    }
}
