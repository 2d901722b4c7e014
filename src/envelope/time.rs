//! The time unit of envelopes: milliseconds since the Unix epoch, as stored in the
//! spool and in JetStream headers.

use std::time::SystemTime;

/// Milliseconds since the Unix epoch, the time unit of envelopes.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn milliseconds_since_the_epoch_and_zero_before_it() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_469_922_850_259);
        assert_eq!(unix_ms(t), 1_469_922_850_259);
        assert_eq!(unix_ms(SystemTime::UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
