//! PagerDuty Events API v2: `POST /v2/enqueue`, `trigger` with a payload, `resolve`
//! with only the dedup key.

use http::{Method, Uri};
use serde_json::json;

use super::{rfc3339, Call, SOURCE};
use crate::alert::{truncate, Labelled};
use crate::secret::Secret;

/// The events API's limit on `payload.summary`.
const SUMMARY_MAX: usize = 1024;

/// The event for `alert`.
pub(crate) fn post(url: &Uri, routing_key: &Secret, alert: &Labelled) -> Call {
    let body = if alert.alert.firing {
        json!({
            "routing_key": routing_key.expose(),
            "event_action": "trigger",
            "dedup_key": alert.dedup_key,
            "payload": {
                "summary": truncate(&alert.alert.summary, SUMMARY_MAX),
                // PagerDuty wants the affected system; the gateway may say which.
                "source": alert.labels.get("instance").map_or(SOURCE, String::as_str),
                "severity": alert.severity,
                "timestamp": rfc3339(alert.alert.starts_at),
                "component": alert.alert.slo,
                "group": alert.labels.get("route").unwrap_or(&alert.alert.slo),
                "class": alert.alert.name,
                "custom_details": {
                    "labels": alert.labels,
                    "annotations": alert.annotations,
                },
            },
        })
    } else {
        json!({
            "routing_key": routing_key.expose(),
            "event_action": "resolve",
            "dedup_key": alert.dedup_key,
        })
    };
    Call {
        method: Method::POST,
        uri: url.clone(),
        authorization: None,
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}
