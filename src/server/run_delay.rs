//! [`RunDelay`]: how long the calling thread waits to run each time it
//! becomes runnable, as the kernel counts it.
//!
//! Linux keeps, per thread, the time it spent runnable but waiting for a
//! CPU and the number of times it got one (`/proc/thread-self/schedstat`).
//! A loop reads its own to learn whether a busy task shares its core in a
//! way its yields never show (see `core_sharing`).

use std::time::{Duration, Instant};

/// How often the wait is read.
pub(crate) const RUN_DELAY_EVERY: Duration = Duration::from_millis(100);

/// The calling thread's scheduler statistics, and the last reading.
#[derive(Debug)]
pub(crate) struct RunDelay {
    file: std::fs::File,
    /// Nanoseconds waited and times run, at the last reading.
    last: (u64, u64),
    last_at: Instant,
}

impl RunDelay {
    /// The calling thread's statistics, where the system has them.
    pub(crate) fn open() -> Option<RunDelay> {
        let file = std::fs::File::open("/proc/thread-self/schedstat").ok()?;
        let mut run_delay = RunDelay {
            file,
            last: (0, 0),
            last_at: Instant::now(),
        };
        run_delay.last = run_delay.read()?;
        Some(run_delay)
    }

    fn read(&self) -> Option<(u64, u64)> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            let mut buf = [0u8; 96];
            let n = self.file.read_at(&mut buf, 0).ok()?;
            parse_schedstat(&buf[..n])
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    /// The average wait per run since the last reading, if `now` is time
    /// for a reading (every [`RUN_DELAY_EVERY`]) and the thread ran since.
    pub(crate) fn average_wait(&mut self, now: Instant) -> Option<Duration> {
        if now.duration_since(self.last_at) < RUN_DELAY_EVERY {
            return None;
        }
        let (delay, runs) = self.read()?;
        let (last_delay, last_runs) = std::mem::replace(&mut self.last, (delay, runs));
        self.last_at = now;
        let runs = runs.checked_sub(last_runs).filter(|&r| r > 0)?;
        Some(Duration::from_nanos(
            delay.saturating_sub(last_delay) / runs,
        ))
    }
}

/// `/proc/<pid>/task/<tid>/schedstat`: "time on the CPU, time waiting,
/// times run", in nanoseconds and counts; the last two.
fn parse_schedstat(text: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut fields = text.split_ascii_whitespace().skip(1);
    let delay = fields.next()?.parse().ok()?;
    let runs = fields.next()?.parse().ok()?;
    Some((delay, runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_gives_its_wait_and_runs() {
        assert_eq!(
            parse_schedstat(b"30194370 139939 48\n"),
            Some((139_939, 48))
        );
        assert_eq!(parse_schedstat(b"30194370\n"), None);
        assert_eq!(parse_schedstat(b""), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_threads_schedstat_is_read() {
        let run_delay = RunDelay::open().expect("Linux has /proc/thread-self/schedstat");
        let (_, runs) = run_delay.read().unwrap();
        assert!(runs >= 1, "the thread has run");
    }
}
