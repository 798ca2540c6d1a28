//! End-to-end tests of `parse` and `load`: the example config, each
//! validation rule with its position, error recovery, and hostile input.

use std::path::Path;
use std::time::Duration;

use steady_config::{
    load, parse, Balance, ByteSize, Config, Diagnostic, EndpointAddr, HashKeySource,
    ListenerProtocol, EXAMPLE,
};

fn errors(yaml: &str) -> Vec<Diagnostic> {
    match parse(yaml, "steady.yaml") {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(diagnostics) => diagnostics.0,
    }
}

/// Asserts that some diagnostic is at `line:column` on `path` and mentions `needle`.
#[track_caller]
fn expect(diagnostics: &[Diagnostic], at: (usize, usize), path: &str, needle: &str) {
    let found = diagnostics
        .iter()
        .any(|d| (d.line, d.column) == at && d.path == path && d.message.contains(needle));
    let all: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        found,
        "no {}:{} {path} ~ {needle:?} in:\n{}",
        at.0,
        at.1,
        all.join("\n")
    );
}

/// Asserts the input yields exactly one diagnostic, as described.
#[track_caller]
fn only(yaml: &str, at: (usize, usize), path: &str, needle: &str) -> Diagnostic {
    let diagnostics = errors(yaml);
    expect(&diagnostics, at, path, needle);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    diagnostics.into_iter().next().unwrap()
}

/// A valid config for tests to extend: a listener `web`, a route `api`, an upstream `app`.
const LISTENER: &str = "listeners:\n  - name: web\n    bind: 127.0.0.1:8080\n";
const ROUTE: &str = "routes:\n  - name: api\n    listener: web\n    upstream: app\n";
const UPSTREAM: &str = "upstreams:\n  - name: app\n    endpoints: [{address: 127.0.0.1:9001}]\n";

#[test]
fn example_from_the_issue_parses_as_written() {
    let config = parse(EXAMPLE, "steady.yaml").unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(config.runtime.workers, Some(2));
    assert_eq!(config.runtime.drain_timeout, Duration::from_secs(30));
    assert_eq!(
        config.admin.as_ref().unwrap().bind_addr(),
        "127.0.0.1:9901".parse().unwrap()
    );
    let web = config.listener("web").unwrap();
    assert_eq!(web.protocol, ListenerProtocol::Http);
    assert_eq!(web.bind_addr(), "127.0.0.1:8080".parse().unwrap());
    assert_eq!(web.limits.max_header_bytes, ByteSize(64 * 1024));
    let routes: Vec<_> = config.routes_for("web").collect();
    assert_eq!(routes.len(), 1);
    let api = routes[0];
    assert_eq!(api.timeout, Duration::from_secs(15));
    assert_eq!(api.response_body_timeout, Duration::from_secs(60));
    assert_eq!(api.matcher.host.as_deref(), Some("api.example.com"));
    assert_eq!(api.matcher.path_prefix.as_deref(), Some("/v1"));
    assert_eq!(
        api.matcher.headers.get("x-tenant").map(String::as_str),
        Some("blue")
    );
    assert_eq!(api.matcher.methods, ["GET", "POST"]);
    let app = config.upstream(&api.upstream).unwrap();
    assert_eq!(app.balance, Balance::RoundRobin);
    let weights: Vec<u32> = app.endpoints.iter().map(|e| e.weight).collect();
    assert_eq!(weights, [1, 2, 1]);
    assert_eq!(
        app.endpoints[2].parse_address(),
        Ok(EndpointAddr::Dns {
            host: "backend.internal".into(),
            port: 9003
        })
    );
    assert!(config.upstream("nope").is_none());
}

#[test]
fn normalizes_header_names_and_hosts() {
    let yaml = format!(
        "{LISTENER}routes:\n  - {{name: api, listener: web, upstream: app, \
         match: {{host: API.Example.com, headers: {{X-Tenant: blue, X-Version: 2}}}}}}\n{UPSTREAM}"
    );
    let config = parse(&yaml, "steady.yaml").unwrap_or_else(|d| panic!("{d}"));
    let matcher = &config.routes[0].matcher;
    assert_eq!(matcher.host.as_deref(), Some("api.example.com"));
    let headers: Vec<(&str, &str)> = matcher
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(headers, [("x-tenant", "blue"), ("x-version", "2")]);
}

#[test]
fn hash_key_sources() {
    for (key, want) in [
        ("header:X-User", HashKeySource::Header("x-user".into())),
        ("cookie:session", HashKeySource::Cookie("session".into())),
        ("client_ip", HashKeySource::ClientIp),
        ("path", HashKeySource::Path),
    ] {
        let yaml = format!(
            "{LISTENER}{ROUTE}upstreams:\n  - name: app\n    balance: maglev\n    \
             hash: {{key: \"{key}\", bounded_load: 1.25}}\n    endpoints: [{{address: a:1}}]\n"
        );
        let config = parse(&yaml, "steady.yaml").unwrap_or_else(|d| panic!("{d}"));
        let hash = config.upstreams[0].hash.as_ref().unwrap();
        assert_eq!(hash.key_source(), want);
        assert_eq!(hash.bounded_load, Some(1.25));
    }
}

#[test]
fn misspelt_key_gets_a_suggestion() {
    let yaml = format!("{LISTENER}{ROUTE}    match:\n      path_prefx: /v1\n{UPSTREAM}");
    let d = only(
        &yaml,
        (9, 7),
        "routes[0].match.path_prefx",
        "unknown field `path_prefx`",
    );
    assert_eq!(d.suggestion.as_deref(), Some("path_prefix"));
    assert_eq!(
        d.to_string(),
        "steady.yaml:9:7: error: routes[0].match.path_prefx: unknown field `path_prefx` \
         (did you mean `path_prefix`?)"
    );
}

#[test]
fn unknown_key_without_near_match_lists_the_fields() {
    let yaml = format!("{LISTENER}    colour: blue\n{ROUTE}{UPSTREAM}");
    let d = only(
        &yaml,
        (4, 5),
        "listeners[0].colour",
        "expected one of `name`, `bind`",
    );
    assert_eq!(d.suggestion, None);
    let d = only(
        &format!("{LISTENER}{ROUTE}{UPSTREAM}lisenters: []\n"),
        (11, 1),
        "lisenters",
        "unknown field",
    );
    assert_eq!(d.suggestion.as_deref(), Some("listeners"));
}

#[test]
fn unknown_enum_value_gets_a_suggestion() {
    let yaml = format!("{LISTENER}    protocol: htps\n{ROUTE}{UPSTREAM}");
    let d = only(
        &yaml,
        (4, 15),
        "listeners[0].protocol",
        "`htps` is not one of `http`, `https`, `tcp`",
    );
    assert_eq!(d.suggestion.as_deref(), Some("https"));
    let yaml = format!("{LISTENER}{ROUTE}{UPSTREAM}    balance: round_robin\n");
    let d = only(&yaml, (11, 14), "upstreams[0].balance", "is not one of");
    assert_eq!(d.suggestion.as_deref(), Some("round-robin"));
}

#[test]
fn every_problem_in_a_file_is_reported() {
    let yaml = "\
runtime:
  workers: 0
  drain_timeout: 5
listeners:
  - name: web
    bind: 127.0.0.1:8080
    protocl: http
  - bind: 127.0.0.1:8081
routes:
  - name: api
    listener: web
    upstream: ap
    timeout: soon
upstreams:
  - name: app
    endpoints:
      - {address: 127.0.0.1, weight: 0}
";
    let diagnostics = errors(yaml);
    expect(&diagnostics, (2, 12), "runtime.workers", "at least 1");
    expect(
        &diagnostics,
        (3, 18),
        "runtime.drain_timeout",
        "`5` has no unit",
    );
    expect(
        &diagnostics,
        (7, 5),
        "listeners[0].protocl",
        "unknown field",
    );
    expect(
        &diagnostics,
        (8, 5),
        "listeners[1].name",
        "missing required field `name`",
    );
    expect(
        &diagnostics,
        (12, 15),
        "routes[0].upstream",
        "no upstream named `ap`",
    );
    expect(
        &diagnostics,
        (13, 14),
        "routes[0].timeout",
        "`soon` is not a duration",
    );
    expect(
        &diagnostics,
        (17, 19),
        "upstreams[0].endpoints[0].address",
        "has no port",
    );
    expect(
        &diagnostics,
        (17, 38),
        "upstreams[0].endpoints[0].weight",
        "1 to 10000",
    );
    assert_eq!(diagnostics.len(), 8, "{diagnostics:#?}");
    // Source order.
    let lines: Vec<usize> = diagnostics.iter().map(|d| d.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

#[test]
fn dropped_list_items_keep_their_file_indices() {
    // The first two endpoints fail to deserialize and are cut; the third's
    // problem must still be reported as endpoints[2].
    let yaml = format!(
        "{LISTENER}{ROUTE}upstreams:\n  - name: app\n    endpoints:\n      - {{weight: 1}}\n      \
         - 7\n      - {{address: 127.0.0.1:9001, weight: 0}}\n"
    );
    let diagnostics = errors(&yaml);
    expect(
        &diagnostics,
        (11, 10),
        "upstreams[0].endpoints[0].address",
        "missing required field",
    );
    expect(
        &diagnostics,
        (12, 9),
        "upstreams[0].endpoints[1]",
        "invalid type",
    );
    expect(
        &diagnostics,
        (13, 43),
        "upstreams[0].endpoints[2].weight",
        "out of range",
    );
    assert_eq!(diagnostics.len(), 3, "{diagnostics:#?}");
}

#[test]
fn a_broken_upstream_is_not_also_reported_as_missing() {
    let yaml = format!("{LISTENER}{ROUTE}upstreams:\n  - name: app\n");
    only(
        &yaml,
        (9, 5),
        "upstreams[0].endpoints",
        "missing required field `endpoints`",
    );
}

// One test per validation rule, each checking position and path.

#[test]
fn duplicate_names() {
    let yaml = format!("{LISTENER}  - name: web\n    bind: 127.0.0.1:8081\n{ROUTE}{UPSTREAM}");
    only(
        &yaml,
        (4, 11),
        "listeners[1].name",
        "listener name `web` is already used by `listeners[0]`",
    );
    let yaml =
        format!("{LISTENER}{ROUTE}  - {{name: api, listener: web, upstream: app}}\n{UPSTREAM}");
    only(
        &yaml,
        (8, 12),
        "routes[1].name",
        "route name `api` is already used",
    );
    let yaml =
        format!("{LISTENER}{ROUTE}{UPSTREAM}  - {{name: app, endpoints: [{{address: a:1}}]}}\n");
    only(
        &yaml,
        (11, 12),
        "upstreams[1].name",
        "upstream name `app` is already used",
    );
    let yaml = format!("listeners:\n  - name: my web\n    bind: 127.0.0.1:8080\n{ROUTE}{UPSTREAM}");
    let diagnostics = errors(&yaml);
    expect(
        &diagnostics,
        (2, 11),
        "listeners[0].name",
        "not a valid listener name",
    );
}

#[test]
fn bind_addresses() {
    let yaml = format!("listeners:\n  - name: web\n    bind: localhost:8080\n{ROUTE}{UPSTREAM}");
    let d = only(&yaml, (3, 11), "listeners[0].bind", "not a host name");
    assert_eq!(d.suggestion.as_deref(), Some("127.0.0.1:8080"));
    let yaml = format!("listeners:\n  - name: web\n    bind: \"::1:8080\"\n{ROUTE}{UPSTREAM}");
    only(&yaml, (3, 11), "listeners[0].bind", "brackets");
    let yaml = format!("admin: {{bind: \"9901\"}}\n{LISTENER}{ROUTE}{UPSTREAM}");
    only(&yaml, (1, 15), "admin.bind", "has no IP address");
    let yaml = format!("admin: {{bind: 9901}}\n{LISTENER}{ROUTE}{UPSTREAM}");
    only(&yaml, (1, 15), "admin.bind", "expected a string");
    let ipv6 = format!("admin: {{bind: \"[::1]:9901\"}}\n{LISTENER}{ROUTE}{UPSTREAM}");
    parse(&ipv6, "steady.yaml").unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn two_sockets_on_one_address() {
    let yaml = format!("admin: {{bind: 127.0.0.1:8080}}\n{LISTENER}{ROUTE}{UPSTREAM}");
    only(
        &yaml,
        (4, 11),
        "listeners[0].bind",
        "clashes with `127.0.0.1:8080` of admin",
    );
    let yaml = format!("{LISTENER}  - name: web2\n    bind: 0.0.0.0:8080\n{ROUTE}  - {{name: b, listener: web2, upstream: app}}\n{UPSTREAM}");
    only(&yaml, (5, 11), "listeners[1].bind", "clashes");
    // Port 0 asks for any free port, so two of them do not clash.
    let yaml = format!(
        "listeners:\n  - {{name: a, bind: 127.0.0.1:0}}\n  - {{name: b, bind: 127.0.0.1:0}}\n\
         routes:\n  - {{name: ra, listener: a, upstream: app}}\n  - {{name: rb, listener: b, upstream: app}}\n{UPSTREAM}"
    );
    parse(&yaml, "steady.yaml").unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn https_needs_tls_and_tls_needs_https() {
    let yaml = format!("{LISTENER}    protocol: https\n{ROUTE}{UPSTREAM}");
    only(
        &yaml,
        (4, 15),
        "listeners[0].tls",
        "`protocol: https` needs `tls",
    );
    let yaml = format!("{LISTENER}    tls: {{cert: c.pem, key: k.pem}}\n{ROUTE}{UPSTREAM}");
    only(
        &yaml,
        (4, 5),
        "listeners[0].tls",
        "only applies to `protocol: https`",
    );
}

#[test]
fn tls_files_must_exist_relative_to_the_config_file() {
    let dir = std::env::temp_dir().join(format!("steady-config-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), "not checked here").unwrap();
    let file = dir.join("steady.yaml");
    let yaml = format!(
        "{LISTENER}    protocol: https\n    tls:\n      cert: cert.pem\n      key: missing.pem\n{ROUTE}{UPSTREAM}"
    );
    std::fs::write(&file, &yaml).unwrap();
    let diagnostics = load(&file).unwrap_err().0;
    expect(
        &diagnostics,
        (7, 12),
        "listeners[0].tls.key",
        "private key file",
    );
    expect(
        &diagnostics,
        (7, 12),
        "listeners[0].tls.key",
        "does not exist",
    );
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    assert_eq!(diagnostics[0].file, file.display().to_string());

    std::fs::write(dir.join("missing.pem"), "").unwrap();
    let config = load(&file).unwrap_or_else(|d| panic!("{d}"));
    let tls = config.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.cert, dir.join("cert.pem"));
    assert_eq!(tls.key, dir.join("missing.pem"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn routes_reference_existing_listeners_and_upstreams() {
    let yaml = format!(
        "{LISTENER}routes:\n  - name: api\n    listener: webb\n    upstream: ap\n{UPSTREAM}"
    );
    let diagnostics = errors(&yaml);
    expect(
        &diagnostics,
        (6, 15),
        "routes[0].listener",
        "no listener named `webb`",
    );
    expect(
        &diagnostics,
        (7, 15),
        "routes[0].upstream",
        "no upstream named `ap`",
    );
    expect(
        &diagnostics,
        (2, 11),
        "listeners[0]",
        "listener `web` has no routes",
    );
    assert_eq!(diagnostics.len(), 3, "{diagnostics:#?}");
    assert_eq!(diagnostics[1].suggestion.as_deref(), Some("web"));
    assert_eq!(diagnostics[2].suggestion.as_deref(), Some("app"));
}

#[test]
fn tcp_listeners_take_one_route_without_match() {
    let yaml = format!(
        "{LISTENER}    protocol: tcp\n{ROUTE}    match: {{path: /x}}\n  - {{name: two, listener: web, upstream: app}}\n{UPSTREAM}"
    );
    let diagnostics = errors(&yaml);
    expect(&diagnostics, (9, 5), "routes[0].match", "remove `match`");
    expect(
        &diagnostics,
        (10, 27),
        "routes[1].listener",
        "takes exactly one route",
    );
    assert_eq!(diagnostics.len(), 2, "{diagnostics:#?}");
}

#[test]
fn tcp_upstreams_hash_only_the_client_ip() {
    let yaml = "\
listeners: [{name: pg, bind: 127.0.0.1:5432, protocol: tcp}]
routes: [{name: pg, listener: pg, upstream: pg}]
upstreams:
  - name: pg
    balance: maglev
    hash: {key: path}
    endpoints: [{address: db-1.internal:5432}]
";
    let d = only(yaml, (6, 17), "upstreams[0].hash.key", "tcp listener `pg`");
    assert_eq!(d.suggestion.as_deref(), Some("client_ip"));
    parse(&yaml.replace("key: path", "key: client_ip"), "steady.yaml")
        .unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn paths_start_with_a_slash() {
    let yaml = format!("{LISTENER}{ROUTE}    match: {{path_prefix: v1}}\n{UPSTREAM}");
    let d = only(
        &yaml,
        (8, 26),
        "routes[0].match.path_prefix",
        "must start with `/`",
    );
    assert_eq!(d.suggestion.as_deref(), Some("/v1"));
    let yaml = format!("{LISTENER}{ROUTE}    match:\n      path: health\n{UPSTREAM}");
    only(
        &yaml,
        (9, 13),
        "routes[0].match.path",
        "must start with `/`",
    );
}

#[test]
fn methods_are_http_tokens() {
    let yaml = format!(
        "{LISTENER}{ROUTE}    match: {{methods: [GET, get, \"NOT A METHOD\"]}}\n{UPSTREAM}"
    );
    let diagnostics = errors(&yaml);
    expect(
        &diagnostics,
        (8, 28),
        "routes[0].match.methods[1]",
        "upper case",
    );
    expect(
        &diagnostics,
        (8, 33),
        "routes[0].match.methods[2]",
        "not an HTTP method",
    );
    assert_eq!(diagnostics[0].suggestion.as_deref(), Some("GET"));
    assert_eq!(diagnostics.len(), 2);
    let custom = format!("{LISTENER}{ROUTE}    match: {{methods: [PURGE]}}\n{UPSTREAM}");
    parse(&custom, "steady.yaml").unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn header_names_are_valid() {
    let yaml = format!(
        "{LISTENER}{ROUTE}    match:\n      headers:\n        \"x tenant\": blue\n{UPSTREAM}"
    );
    only(
        &yaml,
        (10, 9),
        "routes[0].match.headers.x tenant",
        "not a valid header name",
    );
    let yaml =
        format!("{LISTENER}{ROUTE}    match:\n      headers: {{X-A: 1, x-a: 2}}\n{UPSTREAM}");
    only(
        &yaml,
        (9, 25),
        "routes[0].match.headers.x-a",
        "listed twice",
    );
    let yaml = format!("{LISTENER}{ROUTE}    match:\n      headers: {{x-a: [1]}}\n{UPSTREAM}");
    only(
        &yaml,
        (9, 22),
        "routes[0].match.headers.x-a",
        "must be text",
    );
}

#[test]
fn hosts_are_valid() {
    for (host, needle) in [
        ("api.example.com:443", "has a port"),
        ("*", "leave `host` out"),
        ("api.*.com", "leading `*.`"),
        ("bad_host!", "not a valid host"),
    ] {
        let yaml = format!("{LISTENER}{ROUTE}    match: {{host: \"{host}\"}}\n{UPSTREAM}");
        only(&yaml, (8, 19), "routes[0].match.host", needle);
    }
    let wildcard = format!("{LISTENER}{ROUTE}    match: {{host: \"*.example.com\"}}\n{UPSTREAM}");
    parse(&wildcard, "steady.yaml").unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn workers_at_least_one() {
    let yaml = format!("runtime:\n  workers: 0\n{LISTENER}{ROUTE}{UPSTREAM}");
    only(&yaml, (2, 12), "runtime.workers", "at least 1");
    let yaml = format!("runtime:\n  workers: -1\n{LISTENER}{ROUTE}{UPSTREAM}");
    only(&yaml, (2, 12), "runtime.workers", "invalid value");
}

#[test]
fn upstream_needs_endpoints() {
    let yaml = format!("{LISTENER}{ROUTE}upstreams:\n  - name: app\n    endpoints: []\n");
    only(
        &yaml,
        (10, 16),
        "upstreams[0].endpoints",
        "at least one endpoint",
    );
}

#[test]
fn endpoint_addresses_and_weights() {
    let yaml = format!(
        "{LISTENER}{ROUTE}upstreams:\n  - name: app\n    endpoints:\n      - address: \"::1:9000\"\n      \
         - address: \"[::1]:9000\"\n        weight: 10001\n      - address: backend.internal:70000\n"
    );
    let diagnostics = errors(&yaml);
    expect(
        &diagnostics,
        (11, 18),
        "upstreams[0].endpoints[0].address",
        "brackets",
    );
    expect(
        &diagnostics,
        (13, 17),
        "upstreams[0].endpoints[1].weight",
        "1 to 10000",
    );
    expect(
        &diagnostics,
        (14, 18),
        "upstreams[0].endpoints[2].address",
        "not a valid port",
    );
    assert_eq!(diagnostics.len(), 3, "{diagnostics:#?}");
}

#[test]
fn hash_balancers_need_a_valid_hash() {
    let yaml = format!("{LISTENER}{ROUTE}{UPSTREAM}    balance: ring-hash\n");
    only(
        &yaml,
        (11, 14),
        "upstreams[0].hash",
        "`balance: ring-hash` needs `hash",
    );
    let yaml = format!(
        "{LISTENER}{ROUTE}{UPSTREAM}    balance: maglev\n    hash: {{key: \"headers:x-user\"}}\n"
    );
    let d = only(&yaml, (12, 17), "upstreams[0].hash.key", "not a hash key");
    assert_eq!(d.suggestion.as_deref(), Some("header:x-user"));
    let yaml = format!(
        "{LISTENER}{ROUTE}{UPSTREAM}    balance: maglev\n    hash: {{key: \"header:x y\"}}\n"
    );
    only(
        &yaml,
        (12, 17),
        "upstreams[0].hash.key",
        "not a valid header name",
    );
    let yaml = format!("{LISTENER}{ROUTE}{UPSTREAM}    balance: maglev\n    hash: {{key: path, bounded_load: 1.0}}\n");
    only(
        &yaml,
        (12, 37),
        "upstreams[0].hash.bounded_load",
        "greater than 1.0",
    );
}

#[test]
fn hash_on_other_balancers_is_an_error() {
    let yaml = format!("{LISTENER}{ROUTE}{UPSTREAM}    hash: {{key: client_ip}}\n");
    only(
        &yaml,
        (11, 5),
        "upstreams[0].hash",
        "only applies to `balance: ring-hash` or `maglev`",
    );
}

#[test]
fn timeouts_are_not_zero() {
    let yaml = format!(
        "{LISTENER}{ROUTE}    timeout: 0s\n    response_body_timeout: 0s\n\
         {UPSTREAM}    connect_timeout: 0ms\n    slow_start: 0s\n"
    );
    let diagnostics = errors(&yaml);
    expect(
        &diagnostics,
        (8, 14),
        "routes[0].timeout",
        "greater than 0s",
    );
    expect(
        &diagnostics,
        (9, 28),
        "routes[0].response_body_timeout",
        "greater than 0s",
    );
    expect(
        &diagnostics,
        (13, 22),
        "upstreams[0].connect_timeout",
        "greater than 0s",
    );
    expect(
        &diagnostics,
        (14, 17),
        "upstreams[0].slow_start",
        "leave it out",
    );
    let yaml = format!("{LISTENER}    limits: {{idle_timeout: 0s}}\n{ROUTE}{UPSTREAM}");
    only(
        &yaml,
        (4, 28),
        "listeners[0].limits.idle_timeout",
        "greater than 0s",
    );
}

#[test]
fn listener_limits() {
    let yaml = format!(
        "{LISTENER}    limits:\n      max_header_bytes: 32KiB\n      max_body_bytes: null\n      max_headers: 0\n{ROUTE}{UPSTREAM}"
    );
    only(
        &yaml,
        (7, 20),
        "listeners[0].limits.max_headers",
        "at least 1",
    );
    let ok = format!("{LISTENER}    limits: {{max_header_bytes: 32KiB, max_body_bytes: null}}\n{ROUTE}{UPSTREAM}");
    let config = parse(&ok, "steady.yaml").unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        config.listeners[0].limits.max_header_bytes,
        ByteSize(32 * 1024)
    );
    assert_eq!(config.listeners[0].limits.max_body_bytes, None);
    let bad = format!("{LISTENER}    limits: {{max_body_bytes: 10M}}\n{ROUTE}{UPSTREAM}");
    only(
        &bad,
        (4, 30),
        "listeners[0].limits.max_body_bytes",
        "`10MiB`",
    );
}

#[test]
fn needs_a_listener_and_each_listener_a_route() {
    let d = only("", (1, 1), "listeners", "no listeners");
    assert_eq!(
        d.to_string(),
        "steady.yaml:1:1: error: listeners: no listeners; define at least one under `listeners:`"
    );
    let yaml = format!("{LISTENER}{UPSTREAM}");
    only(
        &yaml,
        (2, 11),
        "listeners[0]",
        "listener `web` has no routes",
    );
}

#[test]
fn syntax_errors_have_positions() {
    let d = only("listeners: [\n", (2, 1), "", "invalid YAML");
    assert!(!d.message.contains("line 2"), "{}", d.message);
    let d = only("listeners:\n\t- name: web\n", (2, 1), "", "tab");
    assert!(d.message.contains("spaces"), "{}", d.message);
    let diagnostics = errors("listeners: []\nroutes:\n  a: 1\n  a: 2\n");
    expect(&diagnostics, (4, 3), "routes.a", "appears twice");
    only(
        "a: 1\n---\nb: 2\n",
        (1, 1),
        "",
        "more than one YAML document",
    );
}

#[test]
fn hostile_input_gives_diagnostics_not_panics() {
    let deep = "[".repeat(10_000);
    let deep_maps = "a:\n".to_owned()
        + &(1..300)
            .map(|i| format!("{}a:\n", "  ".repeat(i)))
            .collect::<String>();
    let many_errors = (0..1000).map(|i| format!("k{i}: 1\n")).collect::<String>();
    let inputs = [
        String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x01, 0x9f, 0x92, 0x96]).into_owned(),
        "\0\0\0".to_owned(),
        "\t\t\tlisteners:".to_owned(),
        deep,
        deep_maps,
        many_errors,
        "- just\n- a\n- list\n".to_owned(),
        "just a string".to_owned(),
        "42".to_owned(),
        "runtime: {workers: 99999999999999999999999999999}\n".to_owned(),
        "runtime: {workers: 1e400}\n".to_owned(),
        format!(
            "{LISTENER}{ROUTE}{UPSTREAM}    endpoints: [{{address: a:1, weight: 99999999999}}]\n"
        ),
        "listeners: &a [*a]\n".to_owned(),
        "a: &a [*a, *a]\nb: *b\n".to_owned(),
        "listeners: !!binary aGVsbG8=\n".to_owned(),
        "? [complex, key]\n: value\n".to_owned(),
        "listeners:\n  <<: {name: x}\n".to_owned(),
        "listeners: [{name: web, bind: 127.0.0.1:80, <<: [1]}]\n".to_owned(),
        "~: 1\n1: 2\ntrue: 3\n".to_owned(),
        "listeners:\nroutes:\nupstreams:\n".to_owned(),
    ];
    for input in &inputs {
        let diagnostics = parse(input, "x.yaml").unwrap_err();
        assert!(!diagnostics.is_empty());
        for d in &diagnostics {
            assert!(d.line >= 1 && d.column >= 1, "{d}");
        }
    }
}

#[test]
fn missing_and_unreadable_files_are_diagnostics() {
    let d = load(Path::new("/nonexistent/steady.yaml")).unwrap_err();
    assert_eq!(d.0[0].line, 0);
    assert_eq!(
        d.to_string(),
        "/nonexistent/steady.yaml: error: cannot read config file: no such file\n"
    );
    let d = load(&std::env::temp_dir()).unwrap_err();
    assert_eq!(d.0[0].line, 0);

    let file = std::env::temp_dir().join(format!("steady-config-utf8-{}.yaml", std::process::id()));
    std::fs::write(&file, b"listeners:\n  - name: w\xffb\n").unwrap();
    let d = load(&file).unwrap_err();
    std::fs::remove_file(&file).unwrap();
    assert_eq!((d.0[0].line, d.0[0].column), (2, 12), "{d}");
}

#[test]
fn config_default_is_not_valid() {
    let problems = steady_config::validate(&Config::default());
    assert_eq!(problems[0].path, "listeners");
}

mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn parse_never_panics(text in "\\PC{0,200}") {
            let _ = steady_config::parse(&text, "fuzz.yaml");
        }

        #[test]
        fn parse_never_panics_on_yamlish(text in "([ \\-:{}\\[\\],#&*!|>'\"\n]|name|bind|listeners|routes|upstreams|endpoints|[a-z0-9]{1,4}){0,60}") {
            let _ = steady_config::parse(&text, "fuzz.yaml");
        }

        #[test]
        fn mutated_example_never_panics(cut in 0usize..1200, insert in "[ \\-:{}\\[\\]\n\tx0]{0,3}") {
            let mut text = steady_config::EXAMPLE.to_owned();
            let at = text.char_indices().map(|(i, _)| i).nth(cut % text.chars().count()).unwrap_or(0);
            text.insert_str(at, &insert);
            let _ = steady_config::parse(&text, "fuzz.yaml");
        }
    }
}

#[test]
fn tcp_example_from_the_docs_parses() {
    let yaml = "\
listeners:
  - name: pg
    bind: 0.0.0.0:5432
    protocol: tcp
routes:
  - name: pg
    listener: pg
    upstream: pg
upstreams:
  - name: pg
    balance: maglev
    hash: {key: client_ip}
    endpoints:
      - address: db-1.internal:5432
      - address: db-2.internal:5432
";
    let config = parse(yaml, "steady.yaml").unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        config.upstreams[0].hash.as_ref().unwrap().key_source(),
        HashKeySource::ClientIp
    );
}

#[test]
fn health_checks_parse_and_bad_ones_are_located() {
    let good = "listeners: [{name: web, bind: '127.0.0.1:8080'}]
routes: [{name: r, listener: web, upstream: app}]
upstreams:
  - name: app
    health:
      active: {http: {path: /healthz, expect_status: [200, 204]}, interval: 1s, timeout: 500ms}
    endpoints: [{address: '127.0.0.1:9001'}]
";
    let config = parse(good, "steady.yaml").unwrap();
    let active = config.upstreams[0]
        .health
        .as_ref()
        .unwrap()
        .active
        .as_ref()
        .unwrap();
    assert_eq!(active.interval, Duration::from_secs(1));

    let bad = "listeners: [{name: web, bind: '127.0.0.1:8080'}]
routes: [{name: r, listener: web, upstream: app}]
upstreams:
  - name: app
    health:
      active:
        http: {path: healthz}
        interval: 1s
        timeout: 2s
    endpoints: [{address: '127.0.0.1:9001'}]
";
    let diagnostics = errors(bad);
    let all: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        diagnostics
            .iter()
            .any(|d| d.path == "upstreams[0].health.active.http.path" && d.line == 7),
        "{all:#?}"
    );
    assert!(
        diagnostics
            .iter()
            .any(|d| d.path == "upstreams[0].health.active.timeout" && d.line == 9),
        "{all:#?}"
    );
}

#[test]
fn passive_health_parses_and_rejects_bad_percentages() {
    let yaml = |extra: &str| {
        format!(
            "listeners: [{{name: web, bind: '127.0.0.1:8080'}}]
routes: [{{name: r, listener: web, upstream: app}}]
upstreams:
  - name: app
    health:
      passive: {{consecutive_failures: 3, base_ejection: 10s{extra}}}
    endpoints: [{{address: '127.0.0.1:9001'}}]
"
        )
    };
    let config = parse(&yaml(", max_ejection_percent: 50"), "steady.yaml").unwrap();
    let passive = config.upstreams[0]
        .health
        .as_ref()
        .unwrap()
        .passive
        .as_ref()
        .unwrap();
    assert_eq!(passive.consecutive_failures, Some(3));
    assert_eq!(passive.outlier_config().max_ejection_percent, 50);

    let diagnostics = errors(&yaml(", max_ejection_percent: 150"));
    assert!(
        diagnostics
            .iter()
            .any(|d| d.path == "upstreams[0].health.passive" && d.line == 6),
        "{diagnostics:#?}"
    );
}

#[test]
fn locality_parses_and_overprovisioning_is_checked() {
    let yaml = format!(
        "runtime:\n  locality: {{region: eu, zone: eu-a}}\n{LISTENER}{ROUTE}upstreams:\n  - name: app\n    \
         endpoints:\n      - {{address: 127.0.0.1:9001, zone: eu-a, region: eu}}\n      - {{address: 127.0.0.1:9002, priority: 1}}\n"
    );
    let config = parse(&yaml, "steady.yaml").unwrap_or_else(|d| panic!("{d}"));
    let local = config.runtime.locality.as_ref().unwrap();
    assert_eq!(
        (local.region.as_deref(), local.zone.as_deref()),
        (Some("eu"), Some("eu-a"))
    );
    let eps = &config.upstreams[0].endpoints;
    assert_eq!((eps[0].zone.as_deref(), eps[0].priority), (Some("eu-a"), 0));
    assert_eq!((eps[1].zone.as_deref(), eps[1].priority), (None, 1));
    assert_eq!(config.upstreams[0].overprovisioning, 1.4);

    let yaml = format!("{LISTENER}{ROUTE}{UPSTREAM}    overprovisioning: 0.5\n");
    only(
        &yaml,
        (11, 23),
        "upstreams[0].overprovisioning",
        "at least 1.0",
    );
    let yaml = format!("runtime:\n  locality: {{zone: a, rack: 3}}\n{LISTENER}{ROUTE}{UPSTREAM}");
    only(
        &yaml,
        (2, 23),
        "runtime.locality.rack",
        "unknown field `rack`",
    );
}
