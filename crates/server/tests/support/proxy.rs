//! A TCP proxy the tests put on each directed replication link between cluster members, to
//! cut a link, slow it, or let it flap. A replication connection carries frames one way only
//! (the sender's writer to the receiver's listener), so one proxy is one direction of a link.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One direction of a link.
pub struct Proxy {
    pub address: SocketAddr,
    cut: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    /// Bumped on every cut: connections opened before it are closed.
    epoch: Arc<AtomicU64>,
}

impl Proxy {
    /// A proxy on a free loopback port forwarding to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let epoch = Arc::new(AtomicU64::new(0));
        {
            let (cut, delay_ms, epoch) =
                (Arc::clone(&cut), Arc::clone(&delay_ms), Arc::clone(&epoch));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(client) = stream else { continue };
                    if cut.load(Ordering::Relaxed) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(target) else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    let (cut, delay_ms, epoch) =
                        (Arc::clone(&cut), Arc::clone(&delay_ms), Arc::clone(&epoch));
                    std::thread::spawn(move || pump(client, server, &cut, &delay_ms, &epoch));
                }
            });
        }
        Proxy {
            address,
            cut,
            delay_ms,
            epoch,
        }
    }

    /// Cuts the link: open connections close, new ones are refused.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// Opens the link again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }

    /// Holds every chunk of bytes this long before passing it on.
    pub fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

fn pump(
    mut client: TcpStream,
    mut server: TcpStream,
    cut: &AtomicBool,
    delay_ms: &AtomicU64,
    epoch: &AtomicU64,
) {
    let opened_in = epoch.load(Ordering::Relaxed);
    let _ = client.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if cut.load(Ordering::Relaxed) || epoch.load(Ordering::Relaxed) != opened_in {
            break;
        }
        match client.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                let delay = delay_ms.load(Ordering::Relaxed);
                if delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
                if cut.load(Ordering::Relaxed) || server.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}
