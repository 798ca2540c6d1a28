//! The wall-clock time of a monotonic instant, without a second clock read per request.
//!
//! A request's log line and span carry the wall-clock time it arrived, and its durations
//! come from the monotonic clock. Reading both clocks per request costs a second
//! `clock_gettime`; instead each thread keeps one pair read together and derives the wall
//! time of later instants from it, re-reading the pair once a second so a wall-clock
//! step (NTP) shows within a second.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime};

/// How long a thread's pair of readings serves before it is read again.
const REFRESH: Duration = Duration::from_secs(1);

thread_local! {
    static ANCHOR: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
}

/// The wall-clock time at `at` (an instant of the recent past or the present).
pub(crate) fn wall_time(at: Instant) -> SystemTime {
    // The wall time at `at` from a pair read together, if `at` is less than `within`
    // from it.
    let derive = |(mono, wall): (Instant, SystemTime), within: Duration| match at
        .checked_duration_since(mono)
    {
        Some(after) => (after < within).then(|| wall + after),
        None => {
            let before = mono.duration_since(at);
            (before < within).then(|| wall - before)
        }
    };
    ANCHOR.with(|anchor| {
        let cached = anchor.get().and_then(|pair| derive(pair, REFRESH));
        cached.unwrap_or_else(|| {
            let pair = (Instant::now(), SystemTime::now());
            anchor.set(Some(pair));
            derive(pair, Duration::MAX).unwrap_or(pair.1)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_wall_times_track_the_system_clock() {
        for _ in 0..3 {
            let before = SystemTime::now();
            let derived = wall_time(Instant::now());
            let after = SystemTime::now();
            // Within the time between the reads, give or take the pair's own gap.
            let slack = Duration::from_millis(5);
            assert!(derived + slack >= before && derived <= after + slack);
            std::thread::sleep(Duration::from_millis(20));
        }
        // An instant before the anchor still maps (a request that arrived before a
        // refresh on its thread).
        let earlier = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        let _ = wall_time(Instant::now() + REFRESH + Duration::from_millis(1));
        let t = wall_time(earlier);
        assert!(t <= SystemTime::now());
    }
}

thread_local! {
    /// The `Date` header value of the current second, and that second.
    static HTTP_DATE: Cell<(u64, [u8; 29])> = const { Cell::new((0, [0; 29])) };
}

/// Appends the current time as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110
/// §5.6.7), formatted once a second per thread.
pub(crate) fn push_http_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    HTTP_DATE.with(|cached| {
        let (at, mut text) = cached.get();
        if at != secs {
            let formatted = httpdate::fmt_http_date(now);
            // Always 29 bytes for years 1000-9999.
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                cached.set((secs, text));
            } else {
                out.extend_from_slice(formatted.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&text);
    });
}
