//! A loopback TCP fault proxy for chaos tests.
//!
//! The chaos harness puts a [`FaultProxy`] on the path it wants to break (client → server, or
//! server → Redis): it starts the proxy in front of the real upstream address, points the client
//! at [`FaultProxy::addr`] instead, and then flips [`Fault`]s with [`FaultProxy::set`] while the
//! workload runs. `set(Fault::None)` heals the network. [`FaultProxy::stats`] tells the harness
//! how much traffic and how many resets the proxy saw, e.g. to check that a fault really bit.
//!
//! Every accepted connection gets its own upstream connection and two forwarding loops (one per
//! direction), each with one fixed [`BUFFER_SIZE`] buffer. Faults are shared through a
//! `tokio::sync::watch` channel, so loops react to a change immediately, even while idle.
//! Dropping the proxy (or [`FaultProxy::shutdown`]) closes the listener first and then every
//! forwarded connection. Everything stays on loopback.

use std::future::pending;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::warn;

/// Most connections forwarded at once; a connection accepted beyond it is closed with a warning.
pub const MAX_CONNECTIONS: usize = 1024;
/// Size of the forwarding buffer, one per direction per connection (also the "chunk" size).
pub const BUFFER_SIZE: usize = 16 * 1024;
/// Pause before retrying a failed re-bind of the listener after [`Fault::Refuse`] ends.
const REBIND_RETRY: Duration = Duration::from_millis(50);

/// The network fault the proxy currently imitates; applies to existing and new connections alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// A healthy network: bytes and closes are forwarded as soon as they arrive.
    #[default]
    None,
    /// A slow link (long-haul route, congested switch): every chunk read from either side, and
    /// the close (FIN), is forwarded no earlier than this long after it was read; order is kept.
    /// A chunk is held before the next one is read, so streaming throughput also drops to about
    /// one [`BUFFER_SIZE`] per delay per direction.
    Latency(Duration),
    /// A network partition (pulled cable, dropped packets, frozen peer host): connections are
    /// still accepted, but nothing is forwarded either way, closes included; senders fill their
    /// socket buffers and then block. Nothing is lost: on healing, held bytes flow again, like
    /// TCP retransmitting after a partition heals. Use it to exercise timeouts and heartbeats.
    Blackhole,
    /// A crashed peer or a middlebox killing flows: every forwarded connection is aborted at once
    /// with a TCP RST (`SO_LINGER` 0), and new connections are reset right after accept. Peers see
    /// `ECONNRESET`. Use it to exercise reconnect logic and in-flight request handling.
    Reset,
    /// A peer or NAT that lingers on close: when either side closes its sending half, the FIN
    /// reaches the other side only after this delay, so the connection stays half-open
    /// meanwhile. Use it to check that nobody waits forever on a half-closed connection.
    SlowClose(Duration),
    /// A server that is down (process gone, port closed): the proxy stops listening, so new
    /// connects fail with `ECONNREFUSED`; existing connections keep working. Closing and
    /// re-opening the listener happen on the proxy's task; await [`FaultProxy::settled`] after
    /// `set` to know the port is really closed (or open again).
    Refuse,
}

/// Counters since the proxy started; a snapshot taken by [`FaultProxy::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted, including ones reset, refused or rejected right after accept.
    pub connections_accepted: u64,
    /// Bytes written to the upstream (client → server).
    pub bytes_to_upstream: u64,
    /// Bytes written back to clients (server → client).
    pub bytes_to_client: u64,
    /// Connections the proxy aborted with an RST: by [`Fault::Reset`], [`Fault::Refuse`] (a
    /// connect racing the listener's close), an unreachable upstream, or passing on an I/O error.
    pub connections_reset: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    to_upstream: AtomicU64,
    to_client: AtomicU64,
    reset: AtomicU64,
}

/// A TCP proxy on `127.0.0.1` that forwards to one upstream and injects [`Fault`]s on demand.
///
/// Dropping it stops accepting and closes all its connections (on its task, right after).
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    listening: watch::Receiver<bool>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Binds `127.0.0.1:0` and forwards each accepted connection to `upstream` (which must be a
    /// loopback address), on the current tokio runtime, starting with [`Fault::None`].
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        if !upstream.ip().is_loopback() {
            let msg = format!("fault proxy upstream {upstream} is not a loopback address");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        let listener = listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = listener.local_addr()?;
        let (fault, rx) = watch::channel(Fault::None);
        let (open, listening) = watch::channel(true);
        let counters = Arc::<Counters>::default();
        let task = tokio::spawn(accept_loop(listener, upstream, rx, open, counters.clone()));
        Ok(FaultProxy {
            addr,
            fault,
            listening,
            counters,
            task,
        })
    }

    /// The address clients should connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault for existing and new connections at once; `set(Fault::None)` heals.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// The fault currently in force.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Waits until the listening socket matches the current fault: closed under
    /// [`Fault::Refuse`], open otherwise. Only entering or leaving `Refuse` takes any time.
    pub async fn settled(&self) {
        let want = self.fault() != Fault::Refuse;
        let _ = self.listening.clone().wait_for(|&open| open == want).await;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        ProxyStats {
            connections_accepted: c.accepted.load(Relaxed),
            bytes_to_upstream: c.to_upstream.load(Relaxed),
            bytes_to_client: c.to_client.load(Relaxed),
            connections_reset: c.reset.load(Relaxed),
        }
    }

    /// Stops the proxy and waits until its listener and all its connections are closed.
    pub async fn shutdown(self) {
        let FaultProxy { fault, task, .. } = self;
        drop(fault);
        let _ = task.await;
    }
}

/// A listener with `SO_REUSEADDR`, so the port can be re-bound after [`Fault::Refuse`] while
/// connections accepted on it are still open.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Closes `stream` with an RST instead of a FIN.
fn reset(stream: TcpStream, counters: &Counters) {
    let _ = stream.set_zero_linger();
    counters.reset.fetch_add(1, Relaxed);
}

/// Resolves when the fault changes. Once the proxy is gone it never resolves: the accept loop
/// aborts the connection tasks right after closing the listener, so the listener closes first.
async fn changed(fault: &mut watch::Receiver<Fault>) {
    if fault.changed().await.is_err() {
        pending::<()>().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mut fault: watch::Receiver<Fault>,
    listening: watch::Sender<bool>,
    counters: Arc<Counters>,
) {
    let addr = listener.local_addr().expect("listener is bound");
    let mut listener = Some(listener);
    let mut conns = JoinSet::new();
    loop {
        let refuse = *fault.borrow_and_update() == Fault::Refuse;
        if refuse {
            listener = None;
        } else if listener.is_none() {
            match listen(addr) {
                Ok(l) => listener = Some(l),
                Err(e) => warn!(%addr, error = %e, "fault proxy: re-bind failed; retrying"),
            }
        }
        let open = listener.is_some();
        listening.send_if_modified(|was| std::mem::replace(was, open) != open);
        tokio::select! {
            res = fault.changed() => if res.is_err() { break },
            () = sleep(REBIND_RETRY), if !open && !refuse => {}
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            res = async {
                match &listener { Some(l) => l.accept().await, None => pending().await }
            } => match res {
                Ok((client, peer)) => {
                    counters.accepted.fetch_add(1, Relaxed);
                    if matches!(*fault.borrow(), Fault::Reset | Fault::Refuse) {
                        reset(client, &counters);
                    } else if conns.len() >= MAX_CONNECTIONS {
                        let limit = MAX_CONNECTIONS;
                        warn!(%peer, limit, "fault proxy: too many connections; closing one");
                    } else {
                        conns.spawn(connection(client, upstream, fault.clone(), counters.clone()));
                    }
                }
                Err(e) => {
                    warn!(%addr, error = %e, "fault proxy: accept failed");
                    sleep(Duration::from_millis(10)).await; // back off, e.g. when out of fds
                }
            },
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// A forwarding direction hit the Reset fault or an I/O error: abort the connection with RSTs.
/// (`Ok(())` means the source closed and the close was passed on; the other direction goes on.)
#[derive(Debug)]
struct Abort;

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    counters: Arc<Counters>,
) {
    let mut server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(e) => {
            warn!(%upstream, error = %e, "fault proxy: upstream connect failed");
            return reset(client, &counters);
        }
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let end = {
        let (client_rd, client_wr) = client.split();
        let (server_rd, server_wr) = server.split();
        let c = &counters;
        // Runs until both directions closed, or stops at the first abort.
        tokio::try_join!(
            pump(client_rd, server_wr, fault.clone(), &c.to_upstream),
            pump(server_rd, client_wr, fault, &c.to_client),
        )
    };
    if end.is_err() {
        reset(client, &counters);
        let _ = server.set_zero_linger();
    }
}

/// Holds a chunk (or a close, if `closing`) read at `since` as long as the current fault says,
/// re-evaluating on every change; forever while blackholed.
async fn hold(
    fault: &mut watch::Receiver<Fault>,
    since: Instant,
    closing: bool,
) -> Result<(), Abort> {
    loop {
        let f = *fault.borrow_and_update();
        let delay = match f {
            Fault::Reset => return Err(Abort),
            Fault::Latency(d) => d,
            Fault::SlowClose(d) if closing => d,
            _ => Duration::ZERO,
        };
        tokio::select! {
            () = sleep_until(since + delay), if f != Fault::Blackhole => return Ok(()),
            () = changed(fault) => {}
        }
    }
}

/// Forwards one direction, chunk by chunk, applying the current fault.
async fn pump(
    mut src: ReadHalf<'_>,
    mut dst: WriteHalf<'_>,
    mut fault: watch::Receiver<Fault>,
    bytes: &AtomicU64,
) -> Result<(), Abort> {
    let mut buf = vec![0; BUFFER_SIZE];
    loop {
        // Read a chunk, unless partitioned (then not even a close is noticed).
        let n = loop {
            let f = *fault.borrow_and_update();
            if f == Fault::Reset {
                return Err(Abort);
            }
            tokio::select! {
                res = src.read(&mut buf), if f != Fault::Blackhole => match res {
                    Ok(n) => break n,
                    Err(_) => return Err(Abort),
                },
                () = changed(&mut fault) => {}
            }
        };
        hold(&mut fault, Instant::now(), n == 0).await?;
        if n == 0 {
            let _ = dst.shutdown().await; // the peer may be gone already; that is fine
            return Ok(());
        }
        let reset_fault = async {
            while *fault.borrow_and_update() != Fault::Reset {
                changed(&mut fault).await;
            }
        };
        tokio::select! {
            res = dst.write_all(&buf[..n]) => res.map_err(|_| Abort)?,
            () = reset_fault => return Err(Abort),
        }
        bytes.fetch_add(n as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io::ErrorKind::{ConnectionRefused, ConnectionReset};
    use tokio::time::timeout;

    const DELAY: Duration = Duration::from_millis(100);

    /// A loopback echo server that serves any number of connections.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut rd, mut wr) = stream.split();
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                });
            }
        });
        addr
    }

    async fn echo_proxy() -> FaultProxy {
        FaultProxy::start(echo_server().await).await.unwrap()
    }

    async fn connect(proxy: &FaultProxy) -> TcpStream {
        TcpStream::connect(proxy.addr()).await.unwrap()
    }

    async fn roundtrip(stream: &mut TcpStream, msg: &[u8]) {
        stream.write_all(msg).await.unwrap();
        let mut got = vec![0; msg.len()];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg);
    }

    async fn assert_refused(addr: SocketAddr) {
        let err = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(err.kind(), ConnectionRefused);
    }

    /// Nothing arrives for a while (the only place a timeout is the point of the test).
    async fn assert_silent(stream: &mut TcpStream) {
        let read = timeout(DELAY, stream.read(&mut [0; 64])).await;
        assert!(read.is_err(), "got {read:?} through a blackhole");
    }

    /// The connection was closed under us: an RST (`ECONNRESET`) or at least an EOF.
    async fn assert_closed(stream: &mut TcpStream) {
        match stream.read(&mut [0; 64]).await {
            Ok(0) => {}
            Err(e) => assert_eq!(e.kind(), ConnectionReset),
            Ok(n) => panic!("expected a closed connection, read {n} bytes"),
        }
    }

    #[tokio::test]
    async fn forwards_both_ways_and_counts() {
        let proxy = echo_proxy().await;
        let mut client = connect(&proxy).await;
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut got = vec![0; data.len()];
        let (mut rd, mut wr) = client.split();
        let (w, r) = tokio::join!(wr.write_all(&data), rd.read_exact(&mut got));
        w.unwrap();
        r.unwrap();
        assert_eq!(got, data);
        let stats = proxy.stats();
        assert_eq!(stats.connections_accepted, 1);
        assert_eq!(stats.bytes_to_upstream, data.len() as u64);
        assert_eq!(stats.bytes_to_client, data.len() as u64);
        assert_eq!(stats.connections_reset, 0);
        let err = FaultProxy::start(([10, 0, 0, 1], 80).into()).await;
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn latency_delays_each_direction() {
        let proxy = echo_proxy().await;
        proxy.set(Fault::Latency(DELAY));
        let mut client = connect(&proxy).await;
        let start = std::time::Instant::now();
        roundtrip(&mut client, b"slow").await;
        let took = start.elapsed();
        assert!(took >= 2 * DELAY, "echo took {took:?}");
    }

    #[tokio::test]
    async fn blackhole_holds_bytes_until_healed() {
        let proxy = echo_proxy().await;
        let mut old = connect(&proxy).await;
        roundtrip(&mut old, b"before").await;
        proxy.set(Fault::Blackhole);
        let mut new = connect(&proxy).await;
        old.write_all(b"held").await.unwrap();
        new.write_all(b"also").await.unwrap();
        assert_silent(&mut old).await;
        assert_silent(&mut new).await;
        proxy.set(Fault::None);
        let mut buf = [0; 4];
        old.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"held");
        new.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"also");
    }

    #[tokio::test]
    async fn reset_aborts_existing_and_new_connections() {
        let proxy = echo_proxy().await;
        let mut old = connect(&proxy).await;
        roundtrip(&mut old, b"hello").await;
        proxy.set(Fault::Reset);
        assert_closed(&mut old).await;
        let mut new = connect(&proxy).await;
        assert_closed(&mut new).await;
        assert_eq!(proxy.stats().connections_reset, 2);
        proxy.set(Fault::None);
        let mut healed = connect(&proxy).await;
        roundtrip(&mut healed, b"back").await;
    }

    #[tokio::test]
    async fn slow_close_keeps_the_client_half_open() {
        // An upstream that says goodbye and closes at once.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"bye").await.unwrap();
        });
        let proxy = FaultProxy::start(upstream).await.unwrap();
        proxy.set(Fault::SlowClose(DELAY));
        let start = std::time::Instant::now(); // before the upstream can possibly close
        let mut client = connect(&proxy).await;
        let mut buf = [0; 3];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"bye");
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        let open_for = start.elapsed();
        assert!(open_for >= DELAY, "closed after {open_for:?}");
    }

    #[tokio::test]
    async fn refuse_closes_the_port_until_healed() {
        let proxy = echo_proxy().await;
        let mut old = connect(&proxy).await;
        roundtrip(&mut old, b"hello").await;
        proxy.set(Fault::Refuse);
        proxy.settled().await;
        assert_refused(proxy.addr()).await;
        roundtrip(&mut old, b"still up").await;
        proxy.set(Fault::None);
        proxy.settled().await;
        let mut new = connect(&proxy).await;
        roundtrip(&mut new, b"back").await;
    }

    #[tokio::test]
    async fn drop_closes_listener_and_connections() {
        let proxy = echo_proxy().await;
        let addr = proxy.addr();
        let mut client = TcpStream::connect(addr).await.unwrap();
        roundtrip(&mut client, b"hello").await;
        drop(proxy);
        assert_closed(&mut client).await; // the listener is closed before any connection
        assert_refused(addr).await;

        let proxy = echo_proxy().await;
        let addr = proxy.addr();
        proxy.shutdown().await;
        assert_refused(addr).await;
    }
}
