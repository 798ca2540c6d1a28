//! Alertmanager's webhook payload, version 4, one alert per message.

use std::collections::BTreeMap;
use std::time::SystemTime;

use http::{Method, Uri};
use serde_json::json;

use super::{rfc3339, Call};
use crate::alert::Labelled;

/// What Alertmanager writes as `endsAt` of an alert that has not ended.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Labels a message is grouped by (each message holds one alert).
const GROUP_BY: [&str; 3] = ["alertname", "slo", "alert"];

/// The webhook message for `alert`, for receiver (notifier) `receiver`.
pub(crate) fn post(url: &Uri, receiver: &str, alert: &Labelled, now: SystemTime) -> Call {
    let status = if alert.alert.firing {
        "firing"
    } else {
        "resolved"
    };
    let ends_at = if alert.alert.firing {
        ZERO_TIME.to_string()
    } else {
        rfc3339(alert.alert.ends_at.unwrap_or(now))
    };
    let group_labels: BTreeMap<&str, &str> = GROUP_BY
        .iter()
        .filter_map(|k| alert.labels.get(*k).map(|v| (*k, v.as_str())))
        .collect();
    let body = json!({
        "version": "4",
        "groupKey": group_key(&group_labels),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": alert.labels,
        "commonAnnotations": alert.annotations,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": alert.labels,
            "annotations": alert.annotations,
            "startsAt": rfc3339(alert.alert.starts_at),
            "endsAt": ends_at,
            "generatorURL": "",
            "fingerprint": fingerprint(&alert.labels),
        }],
    });
    Call {
        method: Method::POST,
        uri: url.clone(),
        authorization: None,
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// Alertmanager's group key form: `{}:{alertname="X", slo="Y"}`.
fn group_key(labels: &BTreeMap<&str, &str>) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String((*v).to_string())))
        .collect();
    format!("{{}}:{{{}}}", inner.join(", "))
}

/// Prometheus' label-set fingerprint (FNV-1a 64 over sorted names and values, each
/// followed by 0xff), as 16 hex digits: what Alertmanager puts in `fingerprint`.
pub(crate) fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_of_empty_set_is_the_fnv_offset() {
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
    }

    #[test]
    fn fingerprint_matches_alertmanagers() {
        // As Alertmanager 0.25 reported it for these labels.
        let labels = BTreeMap::from([
            ("alertname".to_string(), "X".to_string()),
            ("slo".to_string(), "s".to_string()),
        ]);
        assert_eq!(fingerprint(&labels), "f73ad85309032c39");
    }

    #[test]
    fn group_key_looks_like_alertmanagers() {
        let labels = BTreeMap::from([("alertname", "A"), ("slo", "s")]);
        assert_eq!(group_key(&labels), r#"{}:{alertname="A", slo="s"}"#);
    }
}
