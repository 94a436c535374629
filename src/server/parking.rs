//! [`Parking`]: how one thread sleeps until another has news for it,
//! without losing a wake-up.
//!
//! Two places need it: a loop waiting for the workers to finish its batches
//! (`mailbox`), and a worker waiting for its next batch (`worker_inbox`).
//! Both follow one protocol. The sleeper [`announce`](Parking::announce)s
//! that it is about to park, looks once more at what it waits for, and
//! parks only if that is still missing. The other thread makes the news
//! visible first and then [`wake`](Parking::wake)s: it takes the
//! announcement, and unparks the sleeper if there was one. Both the
//! announcement and the news are sequentially consistent, so either the
//! sleeper's second look finds the news or the waker finds the
//! announcement. An unpark that comes before the park makes the park
//! return at once, so a sleeper between its second look and its park is
//! not missed either.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;

/// One sleeper's announcement, and the thread to unpark.
#[derive(Debug, Default)]
pub(crate) struct Parking {
    /// The sleeper is parked, or about to park: the next waker unparks it.
    announced: AtomicBool,
    /// The sleeping thread, named once before anyone waits on it.
    thread: OnceLock<Thread>,
}

impl Parking {
    /// Names the thread that parks here (only the first call counts).
    pub(crate) fn set_thread(&self, thread: Thread) {
        let _ = self.thread.set(thread);
    }

    /// On the sleeper's thread, before its second look: a waker from now on
    /// unparks it.
    pub(crate) fn announce(&self) {
        self.announced.store(true, Ordering::SeqCst);
    }

    /// On the sleeper's thread, once it no longer waits.
    pub(crate) fn withdraw(&self) {
        self.announced.store(false, Ordering::SeqCst);
    }

    /// Whether the sleeper has announced itself and not been woken since.
    #[cfg(test)]
    pub(crate) fn is_announced(&self) -> bool {
        self.announced.load(Ordering::SeqCst)
    }

    /// After the news is visible: unparks the sleeper if it announced itself.
    pub(crate) fn wake(&self) {
        if self.announced.swap(false, Ordering::SeqCst) {
            self.unpark();
        }
    }

    /// Unparks the sleeper whether or not it announced itself (news it must
    /// not miss even between two looks, such as the end of its inbox).
    pub(crate) fn unpark(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn no_wake_up_is_lost_between_the_second_look_and_the_park() {
        // A counter as the news: the sleeper waits for each of 10,000 steps
        // in turn; a lost wake-up would hang the test.
        let news = Arc::new(AtomicUsize::new(0));
        let parking = Arc::new(Parking::default());
        let sleeper = {
            let (news, parking) = (Arc::clone(&news), Arc::clone(&parking));
            std::thread::spawn(move || {
                for want in 1..=10_000 {
                    loop {
                        if news.load(Ordering::SeqCst) >= want {
                            break;
                        }
                        parking.announce();
                        if news.load(Ordering::SeqCst) >= want {
                            parking.withdraw();
                            break;
                        }
                        std::thread::park();
                    }
                }
            })
        };
        parking.set_thread(sleeper.thread().clone());
        for _ in 0..10_000 {
            news.fetch_add(1, Ordering::SeqCst);
            parking.wake();
            std::thread::yield_now();
        }
        sleeper.join().unwrap();
    }
}
