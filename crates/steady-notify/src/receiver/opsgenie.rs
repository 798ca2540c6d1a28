//! Opsgenie Alert API: `POST /v2/alerts` creates, `POST /v2/alerts/{alias}/close?
//! identifierType=alias` closes; both with `Authorization: GenieKey <key>`.

use std::collections::BTreeMap;

use http::{HeaderValue, Method};
use serde_json::json;

use super::{encode_segment, join, Call, SOURCE};
use crate::alert::{truncate, Labelled};
use crate::secret::Secret;

/// Opsgenie's field limits.
const MESSAGE_MAX: usize = 130;
const ALIAS_MAX: usize = 512;
const DESCRIPTION_MAX: usize = 15_000;
const TAG_MAX: usize = 50;

/// Opsgenie priority for a route severity.
pub(crate) fn priority(severity: &str) -> &'static str {
    match severity {
        "critical" => "P1",
        "error" => "P2",
        "warning" => "P3",
        "info" => "P5",
        _ => "P3",
    }
}

/// The create or close request for `alert`.
pub(crate) fn post(base: &str, api_key: &Secret, alert: &Labelled) -> Call {
    let alias = truncate(&alert.dedup_key, ALIAS_MAX);
    let (uri, body) = if alert.alert.firing {
        let tags: Vec<String> = [
            "steady".to_string(),
            format!("slo:{}", alert.alert.slo),
            format!("severity:{}", alert.severity),
        ]
        .iter()
        .map(|t| truncate(t, TAG_MAX))
        .collect();
        let mut details: BTreeMap<&str, &str> = alert
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for (k, v) in &alert.annotations {
            if k != "summary" && k != "description" {
                details.insert(k, v);
            }
        }
        let body = json!({
            "message": truncate(&alert.alert.summary, MESSAGE_MAX),
            "alias": alias,
            "description": truncate(&alert.alert.description, DESCRIPTION_MAX),
            "priority": priority(alert.severity),
            "tags": tags,
            "details": details,
            "entity": alert.alert.slo,
            "source": SOURCE,
        });
        (join(base, "/v2/alerts"), body)
    } else {
        let path = format!(
            "/v2/alerts/{}/close?identifierType=alias",
            encode_segment(&alias)
        );
        let body = json!({
            "source": SOURCE,
            "note": truncate(&format!("Resolved: {}", alert.alert.summary), 25_000),
        });
        (join(base, &path), body)
    };
    Call {
        method: Method::POST,
        uri,
        authorization: HeaderValue::from_str(&format!("GenieKey {}", api_key.expose()))
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            }),
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}
