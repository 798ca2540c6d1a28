//! Route matching: the first route of a listener whose conditions all hold wins.

use std::sync::Arc;
use std::time::Duration;

use http::{request::Parts, HeaderName, HeaderValue, Method};

use crate::metrics::RouteMetrics;
use crate::upstream::Upstream;

/// How a route matches the request's host.
#[derive(Debug, Clone)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

/// How a route matches the request's path.
#[derive(Debug, Clone)]
enum PathMatch {
    Any,
    Exact(String),
    /// Matches on segment boundaries: `/v1` matches `/v1` and `/v1/x`, not `/v10`.
    Prefix(String),
}

/// A route ready for matching: conditions compiled, upstream resolved.
pub struct Route {
    /// Name from the config, used in metrics and logs.
    pub name: Arc<str>,
    host: HostMatch,
    path: PathMatch,
    headers: Vec<(HeaderName, HeaderValue)>,
    methods: Vec<Method>,
    /// Where matching requests go.
    pub upstream: Arc<Upstream>,
    /// Deadline for the upstream's response head.
    pub timeout: Duration,
    /// Longest pause in the upstream's response body.
    pub response_body_timeout: Duration,
    /// Counters and histograms for this route.
    pub metrics: RouteMetrics,
    /// Rate limits and priority of this route.
    pub admission: crate::admit::Admission,
    /// Faults to inject, if configured.
    pub faults: Option<crate::fault::Faults>,
    /// The retry policy, if any.
    pub retries: Option<steady_config::retry::Retries>,
    /// When to hedge (from `retries.hedge_after`), if at all.
    pub hedge: Option<crate::hedge::Hedge>,
    /// The config this route was compiled from, to tell on reload whether it changed.
    pub config: steady_config::Route,
}

impl Route {
    /// Compiles a route from config; `upstream` is already built.
    pub fn new(
        config: &steady_config::Route,
        upstream: Arc<Upstream>,
        metrics: RouteMetrics,
        admission: crate::admit::Admission,
        faults: Option<crate::fault::Faults>,
    ) -> Route {
        let m = &config.matcher;
        let host = match m.host.as_deref() {
            None | Some("*") => HostMatch::Any,
            Some(h) if h.starts_with("*.") => HostMatch::Suffix(h[1..].to_ascii_lowercase()),
            Some(h) => HostMatch::Exact(h.to_ascii_lowercase()),
        };
        let path = match (&m.path, &m.path_prefix) {
            (Some(p), _) => PathMatch::Exact(p.clone()),
            (None, Some(p)) if p != "/" => PathMatch::Prefix(p.trim_end_matches('/').to_string()),
            _ => PathMatch::Any,
        };
        // Validation has checked names and values; skip any that still fail to parse.
        let headers = m
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        let methods = m
            .methods
            .iter()
            .filter_map(|s| Method::from_bytes(s.as_bytes()).ok())
            .collect();
        Route {
            name: config.name.as_str().into(),
            host,
            path,
            headers,
            methods,
            upstream,
            timeout: config.timeout,
            response_body_timeout: config.response_body_timeout,
            metrics,
            admission,
            faults,
            retries: config.retries.clone(),
            hedge: config
                .retries
                .as_ref()
                .and_then(|r| r.hedge_after)
                .map(|after| {
                    let now = std::time::Instant::now();
                    crate::hedge::Hedge::new(after, crate::latency::Latency::spawn(now), now)
                }),
            config: config.clone(),
        }
    }

    fn matches(&self, parts: &Parts, host: Option<&str>) -> bool {
        let host_ok = match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => host.is_some_and(|x| x.eq_ignore_ascii_case(h)),
            HostMatch::Suffix(s) => host.is_some_and(|x| {
                x.len() > s.len() && x[x.len() - s.len()..].eq_ignore_ascii_case(s)
            }),
        };
        if !host_ok {
            return false;
        }
        let path = parts.uri.path();
        let path_ok = match &self.path {
            PathMatch::Any => true,
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/') | Some(b'?'))
            }
        };
        path_ok
            && (self.methods.is_empty() || self.methods.contains(&parts.method))
            && self
                .headers
                .iter()
                .all(|(k, v)| parts.headers.get_all(k).iter().any(|x| x == v))
    }
}

/// The routes of one listener, in config order.
///
/// Routes are `Arc`s so that a reload can carry an unchanged route (and its rate-limit
/// buckets) into the next table, and a request can hold its route past a swap.
#[derive(Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
}

impl Router {
    /// Creates a router trying `routes` in order.
    pub fn new(routes: Vec<Arc<Route>>) -> Router {
        Router { routes }
    }

    /// Finds the first route matching the request, whose first `Host` field is `host`.
    pub fn find(&self, parts: &Parts, host: Option<&HeaderValue>) -> Option<&Arc<Route>> {
        let host = request_host(parts, host);
        self.routes.iter().find(|r| r.matches(parts, host))
    }

    /// The routes, in match order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

/// The request's host without port: the URI authority (HTTP/2, absolute-form) or its
/// `Host` field, `host`.
pub fn request_host<'a>(parts: &'a Parts, host: Option<&'a HeaderValue>) -> Option<&'a str> {
    let raw = match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => host?.to_str().ok()?,
    };
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    // By bytes: `str::rfind` with a char pattern costs ten times as much on a short host.
    match host.bytes().rposition(|b| b == b':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("a.example:8080"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
