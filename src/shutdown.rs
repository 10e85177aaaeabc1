//! Graceful shutdown as a small type of its own: every long-running task holds a [`Shutdown`]
//! and stops what it is doing when it fires.

use tokio::sync::watch;

/// Sends the shutdown signal to every [`Shutdown`] made from it.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// Listens for the shutdown signal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl ShutdownTrigger {
    /// A trigger and its first listener.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// Signals every listener (idempotent).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Another listener.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// True once the signal was sent.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when the signal is sent (at once if it already was). Also resolves if the
    /// trigger is dropped, which only happens when the process is ending anyway.
    pub async fn recv(&mut self) {
        let _ = self.rx.wait_for(|&v| v).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_see_the_trigger() {
        let (trigger, mut a) = ShutdownTrigger::new();
        let mut b = trigger.subscribe();
        assert!(!a.is_shutdown());
        trigger.trigger();
        a.recv().await;
        b.recv().await;
        assert!(a.is_shutdown() && b.is_shutdown());
    }
}
