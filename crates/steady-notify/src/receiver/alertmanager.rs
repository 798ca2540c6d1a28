//! Alertmanager API v2: `POST {url}/api/v2/alerts` with a JSON array of postable alerts.
//!
//! A firing alert carries `endsAt` in the near future and is re-sent before then (see
//! the worker); a resolved one carries its resolve time.

use std::time::SystemTime;

use http::Method;
use serde_json::{json, Value};

use super::{join, rfc3339, Call};
use crate::alert::Labelled;

/// One `POST /api/v2/alerts` for `alerts`, each with its `endsAt` (`None`: omitted).
pub(crate) fn post(base: &str, alerts: &[(&Labelled, Option<SystemTime>)]) -> Call {
    let body: Vec<Value> = alerts
        .iter()
        .map(|(a, ends_at)| {
            let mut item = json!({
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.alert.starts_at),
            });
            if let Some(t) = ends_at {
                item["endsAt"] = Value::String(rfc3339(*t));
            }
            item
        })
        .collect();
    Call {
        method: Method::POST,
        uri: join(base, "/api/v2/alerts"),
        authorization: None,
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}
