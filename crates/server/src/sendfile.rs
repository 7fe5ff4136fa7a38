//! Zero-copy firmware downloads on plain HTTP: bytes of a mapped image go to the socket with
//! `sendfile(2)` instead of `write(2)`.
//!
//! Firmware bodies are slices of a memory-mapped image ([`MappedImage`], see
//! `catalog/transfer.rs`) handed to hyper without copying. hyper then writes them to the
//! connection like any other bytes, which copies every byte from the mapping into the socket
//! (and faults every page of the mapping in). [`SendfileStream`] wraps a plain TCP connection
//! under hyper and recognises, on every write, a buffer that lies inside a registered
//! mapping: that buffer is sent with `sendfile` from the image's file at the same offset, so
//! the kernel hands page-cache pages to the socket and the process never touches the bytes.
//! Everything else (headers, configuration files, multipart separators) is written as usual.
//!
//! Why this is exact: a mapping is registered with the file it maps for as long as the
//! mapping lives, and a buffer inside it can only be written while something keeps the
//! mapping alive (the body chunk hyper is writing owns an `Arc` of it). Image files are never
//! rewritten in place (the catalogue adds new files by atomic rename), so the file's bytes at
//! an offset are the mapping's bytes at that offset. TLS connections are not wrapped: there
//! the bytes must pass through the encryption anyway.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A read-only image mapped into memory together with its open file, registered for
/// [`SendfileStream`] while it lives.
pub struct MappedImage {
    map: memmap2::Mmap,
    file: Option<std::fs::File>,
}

/// Live mappings: start address, length, and the file descriptor they map.
static MAPPINGS: RwLock<Vec<(usize, usize, RawFd)>> = RwLock::new(Vec::new());
/// Bytes this process sent with `sendfile` (for metrics and tests).
static SENT: AtomicU64 = AtomicU64::new(0);

/// Bytes sent with `sendfile` since the process started.
pub fn bytes_sent() -> u64 {
    SENT.load(Ordering::Relaxed)
}

impl MappedImage {
    /// Map `file` (read-only) and register the mapping; an empty file gets an unregistered
    /// anonymous page (nothing is ever read from it).
    pub fn open(file: std::fs::File) -> io::Result<Arc<MappedImage>> {
        let len = file.metadata()?.len();
        if len == 0 {
            let map = memmap2::MmapMut::map_anon(1)?.make_read_only()?;
            return Ok(Arc::new(MappedImage { map, file: None }));
        }
        // SAFETY: the catalogue never truncates or rewrites an image file in place (adds are
        // atomic renames of new files), so the mapped bytes do not change under us.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        registry_write().push((map.as_ptr() as usize, map.len(), file.as_raw_fd()));
        Ok(Arc::new(MappedImage {
            map,
            file: Some(file),
        }))
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for MappedImage {
    fn drop(&mut self) {
        // Unregistered before the mapping and the file go (fields drop after this).
        if self.file.is_some() {
            let base = self.map.as_ptr() as usize;
            registry_write().retain(|&(b, _, _)| b != base);
        }
    }
}

fn registry_write() -> std::sync::RwLockWriteGuard<'static, Vec<(usize, usize, RawFd)>> {
    MAPPINGS.write().unwrap_or_else(|p| p.into_inner())
}

/// The file and offset behind `buf` when it lies entirely inside a registered mapping.
fn mapped(buf: &[u8]) -> Option<(RawFd, u64)> {
    if buf.is_empty() {
        return None;
    }
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let maps = MAPPINGS.read().unwrap_or_else(|p| p.into_inner());
    maps.iter()
        .find(|&&(base, len, _)| start >= base && end <= base + len)
        .map(|&(base, _, fd)| (fd, (start - base) as u64))
}

/// A plain TCP connection whose writes of mapped image bytes use `sendfile` (see the module
/// docs); reads and all other writes go to the stream unchanged.
pub struct SendfileStream {
    tcp: TcpStream,
}

impl SendfileStream {
    pub fn new(tcp: TcpStream) -> SendfileStream {
        SendfileStream { tcp }
    }

    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        fd: RawFd,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let sock = self.tcp.as_raw_fd();
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                let mut off = libc::off_t::try_from(offset)
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                // SAFETY: `sock` is this stream's open socket; `fd` is the open file of a
                // mapping that the caller's buffer keeps alive (see the module docs); `off`
                // is a valid pointer for the call's duration.
                let n = unsafe { libc::sendfile(sock, fd, &mut off, len) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    SENT.fetch_add(n as u64, Ordering::Relaxed);
                    Ok(n as usize)
                }
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match mapped(buf) {
            Some((fd, offset)) => self.poll_sendfile(cx, fd, offset, buf.len()),
            None => Pin::new(&mut self.tcp).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Written in order: plain buffers up to the first mapped one with one writev, a
        // mapped buffer at the front with sendfile. A short count is fine for the caller.
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        if let Some((fd, offset)) = mapped(&bufs[first]) {
            return self.poll_sendfile(cx, fd, offset, bufs[first].len());
        }
        let end = bufs[first..]
            .iter()
            .position(|b| mapped(b).is_some())
            .map_or(bufs.len(), |p| first + p);
        Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[..end])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    /// Nothing: the stream is dropped right after (hyper shuts a connection down only to end
    /// it), and closing the socket sends the FIN after whatever is still queued, as
    /// `shutdown(SHUT_WR)` would; one system call less per connection.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bytes of a registered mapping arrive exactly, mixed with plain buffers in vectored
    /// writes, and only mapped buffers are recognised.
    #[tokio::test]
    async fn mapped_bytes_are_sent_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.bin");
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let image = MappedImage::open(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(image.bytes(), &content[..]);
        assert!(mapped(&image.bytes()[10..20]).is_some_and(|(_, off)| off == 10));
        assert!(
            mapped(&content[10..20]).is_none(),
            "a heap copy is not mapped"
        );

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).await.unwrap();
            got
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = SendfileStream::new(tcp);
        let sent_before = bytes_sent();
        let head = b"HEAD\r\n".to_vec();
        let mid = &image.bytes()[1000..2_500_000];
        let tail = b"--end--".to_vec();
        // a vectored write of plain + mapped + plain, completed with write_all semantics
        let mut parts: Vec<&[u8]> = vec![&head, mid, &tail];
        while !parts.is_empty() {
            let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            let mut n = s.write_vectored(&slices).await.unwrap();
            assert!(n > 0);
            while n > 0 {
                if n >= parts[0].len() {
                    n -= parts[0].len();
                    parts.remove(0);
                } else {
                    parts[0] = &parts[0][n..];
                    n = 0;
                }
            }
        }
        s.write_all(&image.bytes()[2_999_990..]).await.unwrap();
        s.shutdown().await.unwrap();
        drop(s);
        let got = reader.await.unwrap();
        let mut want = head.clone();
        want.extend_from_slice(&content[1000..2_500_000]);
        want.extend_from_slice(&tail);
        want.extend_from_slice(&content[2_999_990..]);
        assert_eq!(got.len(), want.len());
        assert!(got == want);
        // (other tests may send too: at least these bytes went through sendfile)
        assert!(bytes_sent() - sent_before >= (2_500_000 - 1000) + 10);

        // dropping the image unregisters it
        let base = image.bytes().as_ptr() as usize;
        drop(image);
        assert!(!MAPPINGS.read().unwrap().iter().any(|&(b, _, _)| b == base));
    }
}
