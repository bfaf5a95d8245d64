//! Pacing an open-loop driver: each command has an intended send time, and latency counts
//! from it, so a driver that falls behind is not hidden (no coordinated omission).

use std::time::Duration;

use ringmatch_pipeline::now_ns;

/// Sleeps (with a 1 us timer slack) until `intended_ns`. The in-process bench paces its
/// driver with this: the driver takes no CPU between sends, like a feed that blocks on its
/// socket. A late wake-up is not hidden: latency counts from the intended time.
pub fn wait_until(intended_ns: u64) {
    ringmatch_pipeline::tighten_timer_slack();
    loop {
        let now = now_ns();
        if now >= intended_ns {
            return;
        }
        std::thread::sleep(Duration::from_nanos(intended_ns - now));
    }
}
