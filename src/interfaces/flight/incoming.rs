//! Flight SQL's connections: at most `max` open at once (more wait in the
//! listen backlog), and each must send the HTTP/2 connection preface within
//! a deadline — tonic waits for it forever, so a connection that says
//! nothing would otherwise hold its socket and its slot until the peer goes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// Length of the HTTP/2 client connection preface.
const PREFACE_BYTES: usize = 24;

/// `incoming`'s connections, accepted only while fewer than `max` are open.
pub fn capped(
    mut incoming: TcpIncoming,
    max: usize,
    preface_timeout: Duration,
) -> impl Stream<Item = io::Result<Capped>> {
    let slots = Arc::new(Semaphore::new(max.max(1)));
    async_stream::stream! {
        loop {
            let slot = slots
                .clone()
                .acquire_owned()
                .await
                .expect("the connection semaphore is never closed");
            match incoming.next().await {
                Some(Ok(stream)) => yield Ok(Capped::new(stream, slot, preface_timeout)),
                Some(Err(e)) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a Flight connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None => break,
            }
        }
    }
}

/// A connection holding its slot, failing its reads if the preface is late.
pub struct Capped {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Until the preface is in: bytes still missing, and the deadline.
    awaiting: Option<(usize, Pin<Box<Sleep>>)>,
}

impl Capped {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit, preface_timeout: Duration) -> Self {
        Self {
            stream,
            _slot: slot,
            awaiting: Some((PREFACE_BYTES, Box::pin(tokio::time::sleep(preface_timeout)))),
        }
    }
}

impl Connected for Capped {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Some((missing, deadline)) = &mut this.awaiting {
            match polled {
                Poll::Ready(Ok(())) => {
                    let read = buf.filled().len() - before;
                    if read >= *missing {
                        this.awaiting = None;
                    } else {
                        *missing -= read;
                    }
                }
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP/2 preface within the header timeout",
                    )));
                }
                _ => {}
            }
        }
        polled
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
