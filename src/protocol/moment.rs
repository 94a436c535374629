//! [`Moment`]: an [`Instant`] in 8 bytes instead of 16, for the timestamps
//! every connection keeps (an idle connection's size is the server's
//! capacity).
//!
//! A moment counts nanoseconds from one process-wide epoch. The protocol
//! never reads the clock, so the epoch comes from the first `now` a caller
//! hands it, set back as far as the platform's clock allows (up to a year):
//! instants from before it are taken as the epoch itself. Between the epoch
//! and 584 years after it, an instant round-trips exactly.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// An instant, or none; ordered as the instants are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Moment(u64);

static EPOCH: OnceLock<Instant> = OnceLock::new();

thread_local! {
    /// This thread's last conversion ([`Moment::of`]).
    static LAST: Cell<Option<(Instant, Moment)>> = const { Cell::new(None) };
}

fn epoch(now: Instant) -> Instant {
    *EPOCH.get_or_init(|| {
        const BACK: [u64; 5] = [365 * 86_400, 86_400, 3_600, 60, 1];
        BACK.iter()
            .find_map(|&s| now.checked_sub(Duration::from_secs(s)))
            .unwrap_or(now)
    })
}

impl Moment {
    /// No instant.
    pub(crate) const NONE: Moment = Moment(0);

    pub(crate) fn of(at: Instant) -> Moment {
        // A loop hands every read of a turn the same `now`: the last
        // conversion is kept per thread, so a message costs a comparison,
        // not a subtraction of timespecs and a 128-bit multiply (about 60
        // instructions a message at 20 B, by callgrind).
        LAST.with(|last| match last.get() {
            Some((instant, moment)) if instant == at => moment,
            _ => {
                let nanos = at.saturating_duration_since(epoch(at)).as_nanos();
                let moment = Moment(u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1);
                last.set(Some((at, moment)));
                moment
            }
        })
    }

    pub(crate) fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The instant, if there is one.
    pub(crate) fn get(self) -> Option<Instant> {
        let epoch = *EPOCH.get()?;
        (self.0 != 0).then(|| epoch + Duration::from_nanos(self.0 - 1))
    }

    /// The instant of a moment known to be set.
    pub(crate) fn at(self) -> Instant {
        self.get().expect("a moment that was set")
    }
}

// Tested through `Connection`'s timers in tests/protocol_conn.rs (the
// protocol's own files may not read the clock, even in tests).
