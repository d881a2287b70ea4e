//! Send credit of one stream: the sender waits for credit, the receiver's Credit frames
//! add to it (docs/protocol.md, "Flow control").

use std::sync::Mutex;
use tokio::sync::Notify;

/// The bytes one stream may still send. Meant for a single taker: the one task that
/// writes the stream.
#[derive(Debug)]
pub struct Window {
    state: Mutex<Credit>,
    notify: Notify,
}

#[derive(Debug)]
struct Credit {
    avail: u64,
    closed: bool,
}

impl Window {
    pub fn new(initial: u32) -> Window {
        Window {
            state: Mutex::new(Credit {
                avail: u64::from(initial),
                closed: false,
            }),
            notify: Notify::new(),
        }
    }

    /// Adds what the receiver granted.
    pub fn grant(&self, bytes: u32) {
        self.state.lock().unwrap().avail += u64::from(bytes);
        // notify_one keeps a permit when nobody waits yet, so a grant that lands between
        // the check in `take` and its await is not lost (one taker per window).
        self.notify.notify_one();
    }

    /// Wakes the taker for good: the stream or its connection is gone.
    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.notify.notify_one();
    }

    /// Waits for credit and takes up to `max` bytes of it; `None` once closed.
    pub async fn take(&self, max: usize) -> Option<usize> {
        loop {
            {
                let mut state = self.state.lock().unwrap();
                if state.closed {
                    return None;
                }
                if state.avail > 0 {
                    let n = state.avail.min(max as u64);
                    state.avail -= n;
                    return Some(n as usize);
                }
            }
            self.notify.notified().await;
        }
    }

    /// Gives back what was taken but not sent.
    pub fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            self.state.lock().unwrap().avail += bytes as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn take_is_bounded_by_the_credit_and_by_max() {
        let window = Window::new(100);
        assert_eq!(window.take(30).await, Some(30));
        assert_eq!(window.take(1000).await, Some(70));
        window.give_back(5);
        assert_eq!(window.take(1000).await, Some(5));
    }

    /// A task waiting in `take` on an empty window.
    async fn waiting_taker() -> (Arc<Window>, tokio::task::JoinHandle<Option<usize>>) {
        let window = Arc::new(Window::new(0));
        let taker = tokio::spawn({
            let window = window.clone();
            async move { window.take(64).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        (window, taker)
    }

    #[tokio::test]
    async fn take_waits_for_a_grant() {
        let (window, taker) = waiting_taker().await;
        assert!(!taker.is_finished(), "took credit that was never granted");
        window.grant(10);
        assert_eq!(taker.await.unwrap(), Some(10));
    }

    #[tokio::test]
    async fn a_grant_before_the_taker_waits_is_not_lost() {
        let window = Window::new(0);
        window.grant(7);
        assert_eq!(window.take(64).await, Some(7));
    }

    #[tokio::test]
    async fn close_wakes_a_waiting_taker_and_refuses_later_ones() {
        let (window, taker) = waiting_taker().await;
        window.close();
        assert_eq!(taker.await.unwrap(), None);
        window.grant(10);
        assert_eq!(window.take(64).await, None);
    }
}
