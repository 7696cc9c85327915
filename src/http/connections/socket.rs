//! A connection's socket as hyper writes to it. Bytes that are a stretch of a mapped blob
//! file (`blob::mapped`: the package files the filesystem store serves) are sent from the
//! file with sendfile(2), page cache to socket, as nginx sends files; anything else is
//! written as it is. The bytes sent are the same either way: the mapping is of that very
//! file, which is never changed. Only the copy from the mapping into the socket's buffers
//! is saved, which is most of what sending a large file costs.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::blob::mapped::{self, FileRegion};

pub struct Socket(pub TcpStream);

impl Socket {
    /// Sends `region` (or as much of it as the socket takes now) from its file.
    #[cfg(target_os = "linux")]
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        region: &FileRegion,
    ) -> Poll<std::io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            let sent = self.0.try_io(tokio::io::Interest::WRITABLE, || {
                let mut offset = region.offset;
                rustix::fs::sendfile(&self.0, region.file(), Some(&mut offset), region.len)
                    .map_err(std::io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
    }

    /// Writes `bufs` telling the kernel that more follows at once (MSG_MORE), so that an
    /// answer's head goes out in one segment with the first bytes of its file rather than
    /// in a small one of its own (the socket has TCP_NODELAY).
    #[cfg(target_os = "linux")]
    fn poll_write_before_file(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        use rustix::net::{sendmsg, SendAncillaryBuffer, SendFlags};
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            let written = self.0.try_io(tokio::io::Interest::WRITABLE, || {
                let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
                sendmsg(&self.0, bufs, &mut SendAncillaryBuffer::default(), flags)
                    .map_err(std::io::Error::from)
            });
            match written {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn poll_write_before_file(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    #[cfg(not(target_os = "linux"))]
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        region: &FileRegion,
    ) -> Poll<std::io::Result<usize>> {
        let _ = (cx, region);
        Poll::Ready(Err(std::io::ErrorKind::Unsupported.into()))
    }

    /// The region of a mapped file `bytes` are, where sendfile(2) can send them.
    fn file_region(bytes: &[u8]) -> Option<FileRegion> {
        if cfg!(target_os = "linux") && !bytes.is_empty() {
            mapped::region(bytes)
        } else {
            None
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Self::file_region(buf) {
            Some(region) => self.poll_send_file(cx, &region),
            None => Pin::new(&mut self.0).poll_write(cx, buf),
        }
    }

    /// hyper hands an answer's head and body chunks together: the slices before the first
    /// one of a mapped file are written at once (flagged that more follows), then that one
    /// is sent from its file. A write may take less than it is given; hyper hands the rest
    /// again.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        for (plain, buf) in bufs.iter().enumerate() {
            if let Some(region) = Self::file_region(buf) {
                if plain == 0 {
                    return self.poll_send_file(cx, &region);
                }
                return self.poll_write_before_file(cx, &bufs[..plain]);
            }
        }
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
