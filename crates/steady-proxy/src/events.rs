//! Recent events: a bounded ring of the state changes an operator wants to see next to
//! the numbers (health flips, ejections, readmissions, reloads, drains), served newest
//! first on the admin listener's `/api/events` and the dashboard.
//!
//! Events are pushed only when state changes, never per request, so a mutex is fine.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// How many events a gateway keeps by default.
pub const DEFAULT_CAPACITY: usize = 256;

/// What kind of change an [`Event`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// An active health check changed an endpoint's verdict.
    Health,
    /// Outlier detection ejected an endpoint.
    Ejection,
    /// An ejected endpoint came back.
    Readmission,
    /// A config reload was applied or refused.
    Reload,
    /// An endpoint asked to drain (or ended its drain), or the gateway began draining.
    Drain,
    /// An SLO alert fired or resolved.
    Alert,
}

/// One recorded state change.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    /// When it happened, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// What changed.
    pub kind: EventKind,
    /// The upstream concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The endpoint address concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// What happened, for people.
    pub message: String,
}

/// A bounded ring of recent [`Event`]s; the oldest fall off once it is full.
#[derive(Debug)]
pub struct Events {
    capacity: usize,
    ring: Mutex<VecDeque<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Events {
    /// Keeps at most `capacity` events (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Events {
            capacity,
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    /// Records an event that happens now.
    pub fn push(
        &self,
        kind: EventKind,
        upstream: Option<&str>,
        endpoint: Option<String>,
        message: impl Into<String>,
    ) {
        let event = Event {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            kind,
            upstream: upstream.map(str::to_owned),
            endpoint,
            message: message.into(),
        };
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// Every kept event, newest first.
    pub fn recent(&self) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().rev().cloned().collect()
    }

    /// How many events are kept at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_up_to_its_capacity() {
        let events = Events::with_capacity(3);
        for i in 0..10 {
            events.push(EventKind::Reload, None, None, format!("reload {i}"));
        }
        let recent = events.recent();
        let messages: Vec<&str> = recent.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["reload 9", "reload 8", "reload 7"]);
        assert_eq!(Events::with_capacity(0).capacity(), 1);
    }

    #[test]
    fn events_serialize_with_lowercase_kinds_and_utc_times() {
        let events = Events::default();
        events.push(
            EventKind::Ejection,
            Some("app"),
            Some("127.0.0.1:1".into()),
            "ejected",
        );
        let json = serde_json::to_value(events.recent()).unwrap();
        assert_eq!(json[0]["kind"], "ejection");
        assert_eq!(json[0]["upstream"], "app");
        let time = json[0]["time"].as_str().unwrap();
        // 2026-11-25T17:40:39.123Z
        assert_eq!(time.len(), 24, "{time}");
        assert!(time.ends_with('Z'), "{time}");
        events.push(EventKind::Reload, None, None, "applied");
        assert!(serde_json::to_value(events.recent()).unwrap()[0]
            .get("upstream")
            .is_none());
    }
}
