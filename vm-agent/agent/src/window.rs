//! Send credit of one stream: the sender waits for credit, the receiver's Credit frames
//! add to it (docs/protocol.md, "Flow control").

use std::sync::Mutex;
use tokio::sync::Notify;

pub struct Window {
    avail: Mutex<u64>,
    closed: Mutex<bool>,
    notify: Notify,
}

impl Window {
    pub fn new(initial: u32) -> Window {
        Window {
            avail: Mutex::new(u64::from(initial)),
            closed: Mutex::new(false),
            notify: Notify::new(),
        }
    }

    pub fn grant(&self, bytes: u32) {
        *self.avail.lock().unwrap() += u64::from(bytes);
        // notify_one keeps a permit when nobody waits yet, so a grant that lands between
        // the check in `take` and its await is not lost (one taker per window).
        self.notify.notify_one();
    }

    /// Wakes the taker for good: the stream's peer is gone.
    pub fn close(&self) {
        *self.closed.lock().unwrap() = true;
        self.notify.notify_one();
    }

    /// Waits for credit and takes up to `max` bytes of it; `None` once closed.
    pub async fn take(&self, max: usize) -> Option<usize> {
        loop {
            if *self.closed.lock().unwrap() {
                return None;
            }
            {
                let mut avail = self.avail.lock().unwrap();
                if *avail > 0 {
                    let n = (*avail).min(max as u64);
                    *avail -= n;
                    return Some(n as usize);
                }
            }
            self.notify.notified().await;
        }
    }

    /// Gives back what was taken but not sent.
    pub fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            *self.avail.lock().unwrap() += bytes as u64;
        }
    }
}
