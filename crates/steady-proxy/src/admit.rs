//! The admit phase: a route's rate limits, then its upstream's concurrency limit.
//!
//! Rate limits answer 429 with `Retry-After` and the IETF `RateLimit` /
//! `RateLimit-Policy` headers (draft-ietf-httpapi-ratelimit-headers); a shed request
//! answers 503 with `Retry-After`. Both happen before an endpoint is picked, so refused
//! requests cost the upstream nothing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use steady_config::limits::{KeyPart, LimitMode, OnFailure, Priority as ConfigPriority, Scope};
use steady_limit::{GlobalLimit, LocalLimiter, Priority, Quota, RedisStore};
use xxhash_rust::xxh3::Xxh3;

use crate::metrics::Metrics;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Everything the admit phase needs for one route.
pub struct Admission {
    limits: Vec<RouteLimit>,
    priority: Priority,
    priority_header: Option<HeaderName>,
    trusted_proxies: Arc<[IpNet]>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("limits", &self.limits.len())
            .field("priority", &self.priority)
            .finish()
    }
}

/// One configured rate limit of a route, live.
struct RouteLimit {
    name: Arc<str>,
    route: Arc<str>,
    parts: Vec<KeyPart>,
    mode: LimitMode,
    /// The per-instance bucket table: the limit itself for `scope: local`, the fallback
    /// for `scope: global` with `on_failure: local`.
    local: LocalLimiter,
    global: Option<Global>,
    /// `RateLimit-Policy` value, rendered once.
    policy: HeaderValue,
    limited: Counter,
    fallback: Counter,
}

struct Global {
    store: Arc<RedisStore>,
    limit: GlobalLimit,
    on_failure: OnFailure,
}

/// The outcome of a route's rate limits.
#[derive(Debug, Default)]
pub struct RateVerdict {
    /// Refused: how long the client should wait.
    pub refused: Option<Duration>,
    /// `RateLimit-Policy` and `RateLimit` values of the tightest enforced limit.
    pub headers: Option<(HeaderValue, HeaderValue)>,
}

impl RateVerdict {
    /// Adds the rate-limit headers (and `Retry-After` when refused) to a response.
    pub fn decorate(&self, headers: &mut http::HeaderMap) {
        if let Some((policy, state)) = &self.headers {
            headers.insert(RATELIMIT_POLICY.clone(), policy.clone());
            headers.insert(RATELIMIT.clone(), state.clone());
        }
        if let Some(wait) = self.refused {
            headers.insert(header::RETRY_AFTER, retry_after_value(wait));
        }
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_value(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

/// The `q` and `w` of `RateLimit-Policy`: whole seconds for the window (the header's
/// unit), and the quota scaled to it, so `10/100ms` reads `q=100;w=1`.
fn policy_window(quota: Quota) -> (u64, u64) {
    let w = ceil_secs(quota.per).max(1);
    let q = (f64::from(quota.rate) * w as f64 / quota.per.as_secs_f64()).round() as u64;
    (q, w)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Admission {
    /// Builds the admission of `route` (on a listener trusting `trusted_proxies`).
    pub fn new(
        route: &steady_config::Route,
        trusted_proxies: Arc<[IpNet]>,
        redis: Option<&(Arc<RedisStore>, OnFailure)>,
        metrics: &Metrics,
    ) -> Admission {
        let limits = route
            .rate_limit
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let name: Arc<str> = l
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}-{i}", route.name))
                    .into();
                let quota = Quota {
                    rate: l.rate.count,
                    per: l.rate.per,
                    burst: l.effective_burst(),
                };
                let global = match (l.scope, redis) {
                    (Scope::Global, Some((store, on_failure))) => Some(Global {
                        store: store.clone(),
                        limit: GlobalLimit {
                            name: name.to_string(),
                            quota,
                        },
                        on_failure: *on_failure,
                    }),
                    _ => None,
                };
                let (q, w) = policy_window(quota);
                let policy = format!("\"{}\";q={q};w={w}", sanitize(&name));
                let (limited, fallback) = metrics.rate_limit(&route.name, &name, l.scope, l.mode);
                RouteLimit {
                    route: route.name.as_str().into(),
                    parts: l.key_parts(),
                    mode: l.mode,
                    local: LocalLimiter::new(quota, l.max_keys),
                    global,
                    policy: HeaderValue::from_str(&policy)
                        .unwrap_or_else(|_| HeaderValue::from_static("\"limit\"")),
                    limited,
                    fallback,
                    name,
                }
            })
            .collect();
        Admission {
            limits,
            priority: priority(route.priority),
            priority_header: route
                .priority_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            trusted_proxies,
        }
    }

    /// Whether the route has any rate limit.
    pub fn has_limits(&self) -> bool {
        !self.limits.is_empty()
    }

    /// The request's priority: the route's, unless the priority header says otherwise.
    pub fn priority(&self, parts: &Parts) -> Priority {
        self.priority_header
            .as_ref()
            .and_then(|h| parts.headers.get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<ConfigPriority>().ok())
            .map_or(self.priority, priority)
    }

    /// Drops idle buckets of every local limit (called periodically).
    pub fn sweep(&self) {
        for limit in &self.limits {
            limit.local.sweep();
        }
    }

    /// Checks every rate limit of the route, in order; the first enforced limit that
    /// refuses decides. Shadow limits only count.
    pub async fn check(&self, parts: &Parts, peer: IpAddr) -> RateVerdict {
        let mut verdict = RateVerdict::default();
        let mut tightest = u32::MAX;
        for limit in &self.limits {
            let key = limit.key(parts, peer, &self.trusted_proxies);
            let (allowed, remaining, wait) = limit.decide(key).await;
            if !allowed {
                limit.limited.inc();
                tracing::debug!(route = %limit.route, limit = %limit.name, mode = limit.mode.as_str(), "rate limited");
            }
            if limit.mode == LimitMode::Shadow {
                continue;
            }
            if !allowed || remaining < tightest {
                tightest = remaining;
                let reset = if allowed {
                    // Time until the bucket is full again.
                    let quota = limit.local.quota();
                    quota.emission_interval() * quota.burst.saturating_sub(remaining)
                } else {
                    wait
                };
                let state = format!(
                    "\"{}\";r={remaining};t={}",
                    sanitize(&limit.name),
                    ceil_secs(reset)
                );
                if let Ok(state) = HeaderValue::from_str(&state) {
                    verdict.headers = Some((limit.policy.clone(), state));
                }
            }
            if !allowed {
                verdict.refused = Some(wait);
                return verdict;
            }
        }
        verdict
    }
}

impl RouteLimit {
    /// Hashes the request's key for this limit.
    fn key(&self, parts: &Parts, peer: IpAddr, trusted: &[IpNet]) -> u64 {
        // Every value goes in with its length first, so no choice of bytes in one part
        // can make two different keys hash the same input (`a`+`bc` vs `ab`+`c`).
        fn value(h: &mut Xxh3, bytes: &[u8]) {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        let mut h = Xxh3::new();
        for part in &self.parts {
            match part {
                KeyPart::ClientIp => match client_ip(peer, &parts.headers, trusted) {
                    IpAddr::V4(ip) => value(&mut h, &ip.octets()),
                    IpAddr::V6(ip) => value(&mut h, &ip.octets()),
                },
                KeyPart::Header(name) => {
                    let values = parts.headers.get_all(name.as_str());
                    h.update(&(values.iter().count() as u64).to_le_bytes());
                    for v in values {
                        value(&mut h, v.as_bytes());
                    }
                }
                KeyPart::Cookie(name) => {
                    value(&mut h, crate::upstream::cookie(parts, name).unwrap_or(b""))
                }
                KeyPart::Path => value(&mut h, parts.uri.path().as_bytes()),
                KeyPart::Route => value(&mut h, self.route.as_bytes()),
                KeyPart::Method => value(&mut h, parts.method.as_str().as_bytes()),
            }
        }
        h.digest()
    }

    /// `(allowed, remaining, retry_after)` from the global limit or the local one.
    async fn decide(&self, key: u64) -> (bool, u32, Duration) {
        if let Some(global) = &self.global {
            let mut buf = [0u8; 16];
            let key_text = hex(key, &mut buf);
            match global.store.check(&global.limit, key_text).await {
                Ok(d) => return (d.allowed, d.remaining, d.retry_after),
                Err(_) => {
                    self.fallback.inc();
                    match global.on_failure {
                        // Nothing is known about what is left: say the whole burst,
                        // so clients pacing on the headers do not stop.
                        OnFailure::Allow => {
                            return (true, global.limit.quota.burst, Duration::ZERO)
                        }
                        OnFailure::Deny => return (false, 0, Duration::from_secs(1)),
                        OnFailure::Local => {}
                    }
                }
            }
        }
        let d = self.local.check(key);
        (d.allowed, d.remaining, d.retry_after)
    }
}

/// Lower-case hex of `key`, on the stack.
fn hex(key: u64, buf: &mut [u8; 16]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = DIGITS[((key >> (60 - 4 * i)) & 0xf) as usize];
    }
    std::str::from_utf8(buf).unwrap_or("0")
}

/// Keeps a limit name safe inside a structured-field string.
fn sanitize(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect()
}

fn priority(p: ConfigPriority) -> Priority {
    match p {
        ConfigPriority::Critical => Priority::Critical,
        ConfigPriority::Normal => Priority::Normal,
        ConfigPriority::Sheddable => Priority::Sheddable,
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the last
/// `X-Forwarded-For` entry not itself a trusted proxy (as NGINX's `real_ip_recursive`).
///
/// Addresses are compared in canonical form, so an IPv4 peer on a dual-stack socket
/// (`::ffff:10.0.0.1`) matches `10.0.0.0/8`.
pub fn client_ip(peer: IpAddr, headers: &http::HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Walk the chain from the nearest hop outwards, hop by hop on the raw bytes: odd
    // bytes a client put in its own part of the list cannot hide the hops proxies added.
    let values: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    for value in values.iter().rev() {
        for hop in value.as_bytes().rsplit(|b| *b == b',') {
            let parsed = std::str::from_utf8(hop)
                .ok()
                .and_then(|h| h.trim().parse::<IpAddr>().ok());
            let Some(ip) = parsed else {
                // Garbage in the chain: trust nothing beyond it.
                return client;
            };
            let ip = ip.to_canonical();
            client = ip;
            if !is_trusted(&ip) {
                return ip;
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn client_ip_believes_only_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.7".parse().unwrap();
        // Untrusted peer: its X-Forwarded-For is ignored.
        assert_eq!(
            client_ip(stranger, &headers(&["1.2.3.4"]), &trusted),
            stranger
        );
        // Trusted peer: the last untrusted hop is the client.
        assert_eq!(
            client_ip(peer, &headers(&["6.6.6.6, 1.2.3.4, 10.1.1.1"]), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // Several header lines are one list.
        assert_eq!(
            client_ip(peer, &headers(&["1.2.3.4", "10.9.9.9"]), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            client_ip(peer, &headers(&["1.2.3.4, junk, 10.2.2.2"]), &trusted),
            "10.2.2.2".parse::<IpAddr>().unwrap()
        );
        // Non-ASCII bytes in the client's own part do not hide the hops after it.
        let mut odd = http::HeaderMap::new();
        odd.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe, 1.2.3.4, 10.1.1.1").unwrap(),
        );
        assert_eq!(
            client_ip(peer, &odd, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // A v4 peer seen through a dual-stack socket is still a trusted v4 proxy.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(mapped, &headers(&["1.2.3.4"]), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // No header: the peer.
        assert_eq!(client_ip(peer, &headers(&[]), &trusted), peer);
        // Nothing trusted: always the peer.
        assert_eq!(client_ip(peer, &headers(&["1.2.3.4"]), &[]), peer);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_value(Duration::from_millis(1)), "1");
        assert_eq!(retry_after_value(Duration::from_millis(1500)), "2");
        assert_eq!(retry_after_value(Duration::ZERO), "1");
        assert_eq!(retry_after_value(Duration::from_secs(60)), "60");
    }

    #[test]
    fn policy_windows_are_whole_seconds() {
        let q = |rate, per_ms| Quota {
            rate,
            per: Duration::from_millis(per_ms),
            burst: 1,
        };
        assert_eq!(policy_window(q(100, 1000)), (100, 1));
        assert_eq!(policy_window(q(1000, 60_000)), (1000, 60));
        assert_eq!(policy_window(q(10, 100)), (100, 1));
        assert_eq!(policy_window(q(3, 1500)), (4, 2));
    }

    #[test]
    fn hex_is_fixed_width() {
        let mut buf = [0u8; 16];
        assert_eq!(hex(0xab, &mut buf), "00000000000000ab");
        assert_eq!(hex(u64::MAX, &mut buf), "ffffffffffffffff");
    }

    #[test]
    fn names_cannot_break_the_header() {
        assert_eq!(sanitize("a\"b\\c d"), "abcd");
    }
}
