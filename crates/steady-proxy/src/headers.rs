//! Header rewriting between client and upstream: hop-by-hop removal (RFC 9110 §7.6.1),
//! `X-Forwarded-*`, `X-Request-Id` and the attempt's trace context ([`Added`]); and the
//! request fields the request path reads, found in one pass ([`RequestFields`]).

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

/// The bit of [`HOP_BY_HOP`]'s `Connection` in a set of those names (bit `i` for
/// `HOP_BY_HOP[i]`).
const CONNECTION_BIT: u8 = 1;

/// `name`'s bit in a set of [`HOP_BY_HOP`] names, or 0 if it is none of them.
fn hop_by_hop_bit(name: &HeaderName) -> u8 {
    HOP_BY_HOP
        .iter()
        .position(|h| h == name)
        .map_or(0, |i| 1 << i)
}

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The request fields the request path reads, found in one pass over its map.
///
/// A map lookup hashes the name and probes even when the field is absent, as most of
/// these are, and hashes a name outside `http`'s standard set byte by byte: the eight
/// lookups this pass replaces cost about 1,100 instructions a request. Comparing a
/// standard name is an integer compare, and comparing a standard name with another
/// kind is one too, so the pass costs a few dozen instructions a field.
#[derive(Debug, Default)]
pub struct RequestFields {
    /// The first `Host`.
    pub host: Option<HeaderValue>,
    /// How many `Host` fields came.
    pub hosts: usize,
    /// The first `X-Request-Id`.
    pub request_id: Option<HeaderValue>,
    /// The first `X-Forwarded-For`.
    pub forwarded_for: Option<HeaderValue>,
    /// Whether a `traceparent` came.
    pub traceparent: bool,
    /// Which of [`HOP_BY_HOP`] came: bit `i` for `HOP_BY_HOP[i]`.
    hop_by_hop: u8,
}

impl RequestFields {
    /// Scans `headers` once.
    pub fn of(headers: &HeaderMap) -> RequestFields {
        let mut fields = RequestFields::default();
        for (name, value) in headers {
            if name == header::HOST {
                fields.hosts += 1;
                fields.host.get_or_insert_with(|| value.clone());
            } else if name == X_REQUEST_ID {
                fields.request_id.get_or_insert_with(|| value.clone());
            } else if name == X_FORWARDED_FOR {
                fields.forwarded_for.get_or_insert_with(|| value.clone());
            } else if name == TRACEPARENT {
                fields.traceparent = true;
            } else {
                fields.hop_by_hop |= hop_by_hop_bit(name);
            }
        }
        fields
    }

    /// The protocol the request asks to upgrade to, as [`upgrade_protocol`] finds it.
    pub fn upgrade_protocol(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        if self.hop_by_hop & CONNECTION_BIT == 0 {
            return None;
        }
        upgrade_protocol(headers)
    }

    /// Removes the hop-by-hop fields, as [`strip_hop_by_hop`] does.
    pub fn strip_hop_by_hop(&self, headers: &mut HeaderMap, keep_upgrade: Option<HeaderValue>) {
        strip_present(headers, self.hop_by_hop, keep_upgrade);
    }
}

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
    let present = headers.keys().fold(0, |set, key| set | hop_by_hop_bit(key));
    strip_present(headers, present, keep_upgrade);
}

/// [`strip_hop_by_hop`] once the names of [`HOP_BY_HOP`] `present` are known.
fn strip_present(headers: &mut HeaderMap, present: u8, keep_upgrade: Option<HeaderValue>) {
    if present == 0 && keep_upgrade.is_none() {
        return;
    }
    if present & CONNECTION_BIT != 0 {
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
    /// (`prior_for` is the first `X-Forwarded-For` the client sent.)
    pub fn new(
        prior_for: Option<HeaderValue>,
        client: IpAddr,
        proto: &'static str,
        host: Option<HeaderValue>,
        request_id: HeaderValue,
    ) -> Added {
        Added {
            client,
            prior_for,
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

/// Keeps a sane incoming `X-Request-Id` (`given`) or makes a new one.
///
/// A client-supplied id is kept only if it is short printable ASCII, so hostile values
/// cannot bloat logs.
pub fn request_id(given: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = given {
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
    crate::text::hex_into(&a.to_be_bytes(), &mut buf[..16]);
    crate::text::hex_into(&b.to_be_bytes(), &mut buf[16..]);
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
            RequestFields::of(&h).forwarded_for,
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
        let id = |h: &HeaderMap| request_id(RequestFields::of(h).request_id.as_ref());
        assert_eq!(id(&h), "abc-123");
        h.insert(
            "x-request-id",
            HeaderValue::from_bytes(&[b'a'; 500]).unwrap(),
        );
        assert_eq!(id(&h).len(), 32);
        assert_ne!(id(&HeaderMap::new()), id(&HeaderMap::new()));
    }

    #[test]
    fn one_pass_finds_what_lookups_would() {
        let mut h = HeaderMap::new();
        h.append(header::HOST, HeaderValue::from_static("a.example"));
        h.append(header::HOST, HeaderValue::from_static("b.example"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        h.append("X-Request-Id", HeaderValue::from_static("r1"));
        h.append("traceparent", HeaderValue::from_static("00-x"));
        h.append(header::USER_AGENT, HeaderValue::from_static("t"));
        let f = RequestFields::of(&h);
        assert_eq!(
            (f.host.unwrap(), f.hosts),
            (HeaderValue::from_static("a.example"), 2)
        );
        assert_eq!(f.forwarded_for.unwrap(), h.get("x-forwarded-for").unwrap());
        assert_eq!(f.request_id.unwrap(), "r1");
        assert!(f.traceparent);
        assert_eq!(f.hop_by_hop, 0);

        let none = RequestFields::of(&HeaderMap::new());
        assert!(none.host.is_none() && none.hosts == 0 && !none.traceparent);
        assert!(none.request_id.is_none() && none.forwarded_for.is_none());
    }

    #[test]
    fn one_pass_strips_and_upgrades_as_the_map_functions_do() {
        let cases: [&[(&str, &str)]; 4] = [
            &[("x-keep", "1")],
            &[
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "1"),
                ("te", "trailers"),
            ],
            &[
                ("Proxy-Connection", "close"),
                ("keep-alive", "5"),
                ("x-keep", "1"),
            ],
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("x-keep", "1"),
            ],
        ];
        for fields in cases {
            let mut h = HeaderMap::new();
            for (n, v) in fields {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_static(v),
                );
            }
            let scanned = RequestFields::of(&h);
            let proto = scanned.upgrade_protocol(&h);
            assert_eq!(proto, upgrade_protocol(&h), "{fields:?}");
            let mut by_map = h.clone();
            strip_hop_by_hop(&mut by_map, proto.clone());
            scanned.strip_hop_by_hop(&mut h, proto);
            assert_eq!(h, by_map, "{fields:?}");
            if fields.iter().any(|(n, _)| *n == "x-keep") {
                assert!(h.contains_key("x-keep"), "{fields:?}");
            }
        }
    }
}
