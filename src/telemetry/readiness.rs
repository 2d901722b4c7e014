//! Readiness as a set of latches released by start-up steps (listeners bound, TLS loaded,
//! policy loaded, queue open), the queue's latch withdrawn while the queue is unreachable
//! (JetStream), and all of it withdrawn for good when the process starts draining.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latch {
    Listeners,
    Tls,
    Policy,
    Queue,
}

const LATCHES: [Latch; 4] = [Latch::Listeners, Latch::Tls, Latch::Policy, Latch::Queue];

#[derive(Debug, Default)]
pub struct Readiness {
    released: [AtomicBool; 4],
    draining: AtomicBool,
}

impl Readiness {
    pub fn release(&self, latch: Latch) {
        self.released[latch as usize].store(true, Ordering::Release);
    }

    /// Takes a latch back: the process is not ready until it is released again.
    pub fn withdraw(&self, latch: Latch) {
        self.released[latch as usize].store(false, Ordering::Release);
    }

    pub fn is_released(&self, latch: Latch) -> bool {
        self.released[latch as usize].load(Ordering::Acquire)
    }

    /// Once draining, the process is never ready again: the load balancer must move on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && self.pending().is_empty()
    }

    /// The latches not yet released, for the `/readyz` body.
    pub fn pending(&self) -> Vec<Latch> {
        LATCHES
            .into_iter()
            .filter(|l| !self.released[*l as usize].load(Ordering::Acquire))
            .collect()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_latch_released_and_not_draining() {
        let r = Readiness::default();
        for latch in LATCHES {
            assert!(!r.is_ready());
            r.release(latch);
        }
        assert!(r.is_ready());
        r.withdraw(Latch::Queue);
        assert!(!r.is_ready() && !r.is_released(Latch::Queue));
        r.release(Latch::Queue);
        assert!(r.is_ready());
        r.start_draining();
        assert!(!r.is_ready());
    }
}
