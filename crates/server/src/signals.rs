//! SIGINT and SIGTERM: the first asks the service to stop cleanly; a second one (for example
//! while the output waits for its broker) is logged and ends the process at once with status
//! 1. The journal is consistent at any moment, so that loses nothing that was acknowledged.
//!
//! Each signal writes one byte to a socket pair (`signal_hook::low_level::pipe`: the only
//! thing the handler does); a thread of its own reads them and counts, so no signal is lost
//! between the first and the moment the service notices it.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The process's stop request, installed once.
pub(crate) struct StopSignal {
    requested: Arc<AtomicBool>,
}

static STOP: OnceLock<StopSignal> = OnceLock::new();

impl StopSignal {
    /// The process's stop request (its handlers and their reader installed by the first
    /// call).
    pub(crate) fn get() -> anyhow::Result<&'static StopSignal> {
        if let Some(stop) = STOP.get() {
            return Ok(stop);
        }
        let (mut reader, writer) = UnixStream::pair()?;
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::low_level::pipe::register(signal, writer.try_clone()?)?;
        }
        let requested = Arc::new(AtomicBool::new(false));
        {
            let requested = Arc::clone(&requested);
            std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    let mut received = 0u64;
                    let mut byte = [0u8; 1];
                    while reader.read(&mut byte).is_ok_and(|read| read == 1) {
                        received += 1;
                        if received == 1 {
                            requested.store(true, Ordering::Release);
                        } else {
                            tracing::error!(
                                target: "ringmatch",
                                "a second signal while stopping: exiting at once with status 1 \
                                 (the journal is consistent; what was not yet published goes \
                                 out at the next start)"
                            );
                            std::process::exit(1);
                        }
                    }
                })?;
        }
        Ok(STOP.get_or_init(|| StopSignal { requested }))
    }

    /// The flag the first signal sets (for threads that stop with the service).
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.requested)
    }

    /// Whether a stop was asked for.
    pub(crate) fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }
}
