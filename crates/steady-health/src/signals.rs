//! Load and drain reports an endpoint attaches to its health-check response.
//!
//! Headers win over the JSON body: `X-Steady-Load: 0.73` (a fraction from 0 to 1) and
//! `X-Steady-Drain: 1` (or `true`; `0`/`false` end a drain). With a JSON content type the
//! body may carry `{"load": 0.73, "drain": true}` instead. Values that do not parse or are
//! out of range are ignored, never a check failure.

use http::HeaderMap;

/// Header carrying the endpoint's load, a fraction from 0.0 to 1.0.
pub const LOAD_HEADER: &str = "x-steady-load";
/// Header asking steady to stop sending new traffic (`1`/`true`) or to resume (`0`/`false`).
pub const DRAIN_HEADER: &str = "x-steady-drain";

/// What one response said about load and draining; `None` means it did not say.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// Reported load, within `0.0..=1.0`.
    pub load: Option<f64>,
    /// Reported drain request.
    pub drain: Option<bool>,
}

impl Signals {
    /// Reads the headers of a response.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            load: text(LOAD_HEADER).and_then(|v| v.trim().parse().ok().and_then(valid_load)),
            drain: text(DRAIN_HEADER).and_then(parse_flag),
        }
    }

    /// Reads `{"load": .., "drain": ..}` from a JSON body; anything else says nothing.
    pub fn from_json(body: &[u8]) -> Self {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) else {
            return Self::default();
        };
        Self {
            load: map
                .get("load")
                .and_then(serde_json::Value::as_f64)
                .and_then(valid_load),
            drain: map.get("drain").and_then(serde_json::Value::as_bool),
        }
    }

    /// Fills what `self` left unsaid from `other`.
    pub fn or(self, other: Self) -> Self {
        Self {
            load: self.load.or(other.load),
            drain: self.drain.or(other.drain),
        }
    }
}

/// Returns whether a `Content-Type` value names JSON (`application/json`, `…+json`).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

fn valid_load(load: f64) -> Option<f64> {
    (0.0..=1.0).contains(&load).then_some(load)
}

fn parse_flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|&(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn headers_carry_load_and_drain() {
        let got = Signals::from_headers(&headers(&[
            ("X-Steady-Load", "0.73"),
            ("X-Steady-Drain", "1"),
        ]));
        assert_eq!(
            got,
            Signals {
                load: Some(0.73),
                drain: Some(true)
            }
        );
        let got = Signals::from_headers(&headers(&[("x-steady-drain", " False ")]));
        assert_eq!(got.drain, Some(false));
        assert_eq!(got.load, None);
    }

    #[test]
    fn bad_values_say_nothing() {
        for load in ["1.5", "-0.1", "NaN", "high", ""] {
            let got = Signals::from_headers(&headers(&[("x-steady-load", load)]));
            assert_eq!(got.load, None, "{load}");
        }
        let got = Signals::from_headers(&headers(&[("x-steady-drain", "maybe")]));
        assert_eq!(got.drain, None);
        assert_eq!(Signals::from_json(b"not json"), Signals::default());
        assert_eq!(Signals::from_json(b"[0.5]"), Signals::default());
        assert_eq!(
            Signals::from_json(br#"{"load": 7, "drain": "yes"}"#),
            Signals::default()
        );
    }

    #[test]
    fn json_body_and_precedence() {
        let body = Signals::from_json(br#"{"status": "ok", "load": 0.25, "drain": true}"#);
        assert_eq!(
            body,
            Signals {
                load: Some(0.25),
                drain: Some(true)
            }
        );
        let header = Signals {
            load: Some(0.9),
            drain: None,
        };
        assert_eq!(
            header.or(body),
            Signals {
                load: Some(0.9),
                drain: Some(true)
            }
        );
        assert_eq!(Signals::from_json(br#"{"load": 1}"#).load, Some(1.0));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/health+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
