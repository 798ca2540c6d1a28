//! Header rewriting between client and upstream: hop-by-hop removal (RFC 9110 §7.6.1),
//! `X-Forwarded-*`, `X-Request-Id` and the attempt's trace context ([`Added`]).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::trace::{TRACEPARENT, TRACESTATE};

/// Headers that describe one connection, not the message, and never cross a proxy.
/// (`Trailer` is not one: it announces the trailer fields, which steady passes on,
/// RFC 9110 §6.6.2.)
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Returns the protocol a request asks to upgrade to (HTTP/1.1 `Connection: upgrade`).
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    if wants {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes hop-by-hop headers, including any that `Connection` names.
///
/// When `keep_upgrade` is set, `Connection: upgrade` and `Upgrade` are put back so the
/// upgrade handshake reaches the other side.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: Option<HeaderValue>) {
    // One scan noting which hop-by-hop names are present, instead of a hash lookup per
    // name: most requests carry none, and most responses only `Connection: keep-alive`.
    // Comparing a standard header name is an integer compare.
    let mut present = 0u8;
    for key in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == key) {
            present |= 1 << i;
        }
    }
    if present & 1 != 0 {
        // Headers that `Connection` names (RFC 9110 §7.6.1), other than the fixed set
        // and the `close`/`keep-alive` options, which name no header here.
        // Collected (no allocation when there are none) so the map can be changed.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(str::trim)
            .filter(|token| {
                !token.is_empty()
                    && !token.eq_ignore_ascii_case("close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|h| token.eq_ignore_ascii_case(h.as_str()))
            })
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    // TE: trailers is the one value allowed through (RFC 9110 §10.1.4); drop it too:
    // hyper negotiates trailers per hop.
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if let Some(proto) = keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto);
    }
}

/// The headers steady sets on a request for its upstream, replacing any the client
/// sent: `X-Forwarded-For` (the client's address after the prior hops), `-Proto`,
/// `-Host`, `X-Request-Id`, and the attempt's `traceparent` and `tracestate`; and
/// `Expect`, which steady answers itself, removed.
///
/// Kept apart from the request's `HeaderMap`: an HTTP/1.1 exchange writes them straight
/// into the head ([`Added::replaces`] while the map's headers are written, then
/// [`Added::write`]). Inserting them into the map cost about 2,000 instructions per
/// request (hashing, a grow of the map, a value allocated for the address). The h2c
/// client gets them in the map ([`Added::apply`]).
#[derive(Clone, Debug)]
pub struct Added {
    /// The client's address, appended to `X-Forwarded-For`.
    pub client: IpAddr,
    /// The first `X-Forwarded-For` the client sent, if any.
    pub prior_for: Option<HeaderValue>,
    /// `X-Forwarded-Proto`: the listener's scheme.
    pub proto: &'static str,
    /// `X-Forwarded-Host`: the host as the client sent it.
    pub host: Option<HeaderValue>,
    /// `X-Request-Id`.
    pub request_id: HeaderValue,
    /// The attempt's `traceparent`; with `None` the client's trace headers pass as sent.
    pub traceparent: Option<[u8; 55]>,
    /// The attempt's `tracestate`, if the trace carries one (the client's is replaced
    /// whenever `traceparent` is set).
    pub tracestate: Option<HeaderValue>,
}

impl Added {
    /// What a request from `client` gets, before its attempt's trace context.
    pub fn new(
        headers: &HeaderMap,
        client: IpAddr,
        proto: &'static str,
        host: Option<HeaderValue>,
        request_id: HeaderValue,
    ) -> Added {
        Added {
            client,
            prior_for: headers.get(&X_FORWARDED_FOR).cloned(),
            proto,
            host,
            request_id,
            traceparent: None,
            tracestate: None,
        }
    }

    /// Whether the client's header `name` is replaced (or dropped) rather than passed.
    #[inline]
    pub fn replaces(&self, name: &HeaderName) -> bool {
        match name.as_str() {
            "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "x-request-id"
            | "expect" => true,
            "traceparent" | "tracestate" => self.traceparent.is_some(),
            _ => false,
        }
    }

    /// `X-Forwarded-For`'s value: the prior hops, then the client.
    fn push_forwarded_for(&self, out: &mut impl crate::text::Out) {
        if let Some(prior) = self.prior_for.as_ref().filter(|p| !p.is_empty()) {
            out.put(prior.as_bytes());
            out.put(b", ");
        }
        crate::text::push_ip(out, self.client);
    }

    /// Appends the header lines to an HTTP/1.1 head.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"x-forwarded-for: ");
        self.push_forwarded_for(out);
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(self.proto.as_bytes());
        if let Some(host) = &self.host {
            out.extend_from_slice(b"\r\nx-forwarded-host: ");
            out.extend_from_slice(host.as_bytes());
        }
        out.extend_from_slice(b"\r\nx-request-id: ");
        out.extend_from_slice(self.request_id.as_bytes());
        if let Some(traceparent) = &self.traceparent {
            out.extend_from_slice(b"\r\ntraceparent: ");
            out.extend_from_slice(traceparent);
        }
        if let Some(tracestate) = &self.tracestate {
            out.extend_from_slice(b"\r\ntracestate: ");
            out.extend_from_slice(tracestate.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Sets the headers in `headers` (for a client that takes a `HeaderMap`).
    pub fn apply(&self, headers: &mut HeaderMap) {
        let mut forwarded_for = Vec::new();
        self.push_forwarded_for(&mut forwarded_for);
        if let Ok(value) = HeaderValue::from_bytes(&forwarded_for) {
            headers.insert(X_FORWARDED_FOR.clone(), value);
        }
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(self.proto),
        );
        if let Some(host) = &self.host {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        headers.insert(X_REQUEST_ID.clone(), self.request_id.clone());
        headers.remove(header::EXPECT);
        if let Some(traceparent) = &self.traceparent {
            if let Ok(value) = HeaderValue::from_bytes(traceparent) {
                headers.insert(TRACEPARENT, value);
            }
            match &self.tracestate {
                Some(state) => headers.insert(TRACESTATE, state.clone()),
                None => headers.remove(TRACESTATE),
            };
        }
    }
}

/// Keeps a sane incoming `X-Request-Id` or makes a new one.
///
/// A client-supplied id is kept only if it is short printable ASCII, so hostile values
/// cannot bloat logs.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    new_request_id()
}

fn new_request_id() -> HeaderValue {
    // 128 random bits as 32 hex digits: same entropy as a UUIDv4, cheaper to make.
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    let mut buf = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in a
        .to_be_bytes()
        .iter()
        .chain(b.to_be_bytes().iter())
        .enumerate()
    {
        buf[2 * i] = HEX[(byte >> 4) as usize];
        buf[2 * i + 1] = HEX[(byte & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn every_connection_header_line_names_headers_to_drop() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(header::CONNECTION, HeaderValue::from_static(" X-A ,, x-b"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-keep"]);
    }

    #[test]
    fn keeps_upgrade_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let proto = upgrade_protocol(&h);
        assert_eq!(proto.as_ref().unwrap(), "websocket");
        strip_hop_by_hop(&mut h, proto);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn appends_forwarded_for() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let added = Added::new(
            &h,
            "127.0.0.1".parse().unwrap(),
            "http",
            Some(HeaderValue::from_static("a.example")),
            HeaderValue::from_static("id"),
        );
        added.apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.example");
        // The same lines as an HTTP/1.1 head gets them.
        let mut head = Vec::new();
        added.write(&mut head);
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.starts_with("x-forwarded-for: 10.0.0.1, 127.0.0.1\r\n"),
            "{head}"
        );
    }

    #[test]
    fn request_id_rejects_hostile_values() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(
            "x-request-id",
            HeaderValue::from_bytes(&[b'a'; 500]).unwrap(),
        );
        assert_eq!(request_id(&h).len(), 32);
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }
}
