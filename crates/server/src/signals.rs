//! SIGINT and SIGTERM: the first asks the service to stop cleanly; a second one while it
//! stops (for example while the output waits for its broker) is logged and ends the process at
//! once with status 1. The journal is consistent at any moment, so that loses nothing that was
//! acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The process's stop request, installed once.
pub(crate) struct StopSignal {
    requested: Arc<AtomicBool>,
    again: Arc<AtomicBool>,
    watching: AtomicBool,
}

static STOP: OnceLock<StopSignal> = OnceLock::new();

impl StopSignal {
    /// The process's stop request (its handlers installed by the first call).
    pub(crate) fn get() -> anyhow::Result<&'static StopSignal> {
        if let Some(stop) = STOP.get() {
            return Ok(stop);
        }
        let stop = StopSignal {
            requested: Arc::new(AtomicBool::new(false)),
            again: Arc::new(AtomicBool::new(false)),
            watching: AtomicBool::new(false),
        };
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // `again` before `requested`: the handlers run in that order, so once `requested`
            // is seen, the first signal has already set `again`, and clearing it in
            // `stopping` cannot race with that first signal.
            signal_hook::flag::register(signal, Arc::clone(&stop.again))?;
            signal_hook::flag::register(signal, Arc::clone(&stop.requested))?;
        }
        Ok(STOP.get_or_init(|| stop))
    }

    /// The flag a signal sets (for threads that stop with the service).
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.requested)
    }

    /// Whether a stop was asked for.
    pub(crate) fn requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// The service begins to stop: from now on, another signal is logged and ends the process
    /// with status 1.
    pub(crate) fn stopping(&self) {
        if self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        self.again.store(false, Ordering::Release);
        let again = Arc::clone(&self.again);
        let spawned = std::thread::Builder::new()
            .name("second-signal".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(10));
                if again.load(Ordering::Acquire) {
                    tracing::error!(
                        target: "ringmatch",
                        "a second signal while stopping: exiting at once with status 1 (the \
                         journal is consistent; what was not yet published goes out at the \
                         next start)"
                    );
                    std::process::exit(1);
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(target: "ringmatch", %error, "cannot watch for a second signal");
        }
    }
}
