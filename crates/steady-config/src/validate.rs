//! Semantic checks that serde cannot express: unique names, references between
//! sections, addresses, ranges and protocol rules. Every problem is collected;
//! none stops the others from being found.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diagnostic::{closest, Issue};
use crate::locate::FieldPath;
use crate::schema::{Config, EndpointAddr, HashKeySource, ListenerProtocol, Match, Tls};

/// Largest endpoint weight; keeps weighted schedules small.
pub const MAX_WEIGHT: u32 = 10_000;

/// A semantic problem, located by field path only (see [`validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path such as `routes[0].match.headers`.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
    /// A likely intended value, if there is one.
    pub suggestion: Option<String>,
}

/// Checks a config built in code (for example in tests); returns every problem,
/// empty when the config is valid.
///
/// [`crate::parse`] and [`crate::load`] run the same checks and add source
/// positions. Relative TLS paths are checked against the current directory.
pub fn validate(config: &Config) -> Vec<Problem> {
    check(config, &Context::default())
        .into_iter()
        .map(|issue| Problem {
            path: issue.path.to_string(),
            message: issue.message,
            suggestion: issue.suggestion,
        })
        .collect()
}

/// What the parser knows beyond the config itself.
#[derive(Debug, Default)]
pub(crate) struct Context {
    /// Directory relative TLS paths are resolved against; `None` is the current one.
    pub(crate) base_dir: Option<PathBuf>,
    /// Names of listeners that were in the file but failed to deserialize; routes
    /// that name them are not reported a second time.
    pub(crate) dropped_listeners: HashSet<String>,
    /// Some listener was dropped whose name is unknown: skip listener references.
    pub(crate) listeners_unknown: bool,
    /// As `dropped_listeners`, for upstreams.
    pub(crate) dropped_upstreams: HashSet<String>,
    /// As `listeners_unknown`, for upstreams.
    pub(crate) upstreams_unknown: bool,
    /// Listener names of routes that failed to deserialize.
    pub(crate) dropped_route_listeners: HashSet<String>,
    /// Some route was dropped whose listener is unknown: skip "listener has no routes".
    pub(crate) routes_unknown: bool,
}

pub(crate) fn check(config: &Config, ctx: &Context) -> Vec<Issue> {
    let mut issues = Vec::new();
    let root = FieldPath::root();

    let runtime = root.key("runtime");
    if config.runtime.workers == Some(0) {
        issues.push(Issue::new(
            runtime.key("workers"),
            "must be at least 1; leave it out for one worker per core",
        ));
    }

    // Every bound address, to find two sockets on one address.
    let mut binds: Vec<(SocketAddr, FieldPath, String)> = Vec::new();
    if let Some(admin) = &config.admin {
        let path = root.key("admin").key("bind");
        match parse_bind(&admin.bind) {
            Ok(addr) => binds.push((addr, path, "admin".into())),
            Err((message, suggestion)) => {
                issues.push(Issue::new(path, message).suggest(suggestion))
            }
        }
    }

    check_listeners(config, ctx, &mut binds, &mut issues);
    check_bind_conflicts(&binds, &mut issues);
    check_routes(config, ctx, &mut issues);
    check_upstreams(config, &mut issues);
    check_admission(config, &mut issues);
    for (i, route) in config.routes.iter().enumerate() {
        let mut seen = std::collections::HashSet::new();
        for (k, event) in route.count.iter().enumerate() {
            let path = root.key("routes").index(i).key("count").index(k);
            if event.name.trim().is_empty() {
                issues.push(Issue::new(path.key("name"), "an event needs a name"));
            } else if !seen.insert(event.name.as_str()) {
                issues.push(Issue::new(
                    path.key("name"),
                    format!("`{}` is counted twice on this route", event.name),
                ));
            }
            for (m, method) in event.methods.iter().enumerate() {
                if method.parse::<http::Method>().is_err() {
                    issues.push(Issue::new(
                        path.key("methods").index(m),
                        format!("`{method}` is not an HTTP method"),
                    ));
                }
            }
        }
    }
    let buckets = root.key("metrics").key("latency_buckets");
    if config.metrics.latency_buckets.is_empty() {
        issues.push(Issue::new(
            buckets.clone(),
            "needs at least one bucket bound",
        ));
    }
    if config.metrics.latency_buckets.iter().any(|d| d.is_zero()) {
        issues.push(Issue::new(buckets, "bucket bounds must be greater than 0s"));
    }
    if let Some(log) = &config.access_log {
        for (field, message) in log.problems() {
            issues.push(Issue::new(root.key("access_log").key(field), message));
        }
    }
    if let Some(tracing) = &config.tracing {
        let ca_file = tracing.otlp.tls.as_ref().and_then(|t| t.ca_file.as_ref());
        if let Some(file) = ca_file {
            let at = root.key("tracing").key("otlp").key("tls").key("ca_file");
            check_pem_file(file, "CA certificate", at, ctx, &mut issues);
        }
        for (field, message) in tracing.problems() {
            issues.push(Issue::new(root.key("tracing").key(field), message));
        }
    }
    check_slos(config, &mut issues);
    issues
}

/// SLOs, the routes they name, alert routing and notifiers.
fn check_slos(config: &Config, issues: &mut Vec<Issue>) {
    let root = FieldPath::root();
    let slos = root.key("slos");
    check_names(
        &slos,
        "SLO",
        config.slos.iter().map(|s| s.name.as_str()),
        issues,
    );
    let routes: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    for (i, slo) in config.slos.iter().enumerate() {
        let path = slos.index(i);
        for (field, message) in slo.problems() {
            issues.push(Issue::new(path.key(field), message));
        }
        for (k, route) in slo.routes.iter().enumerate() {
            if !routes.contains(&route.as_str()) {
                issues.push(
                    Issue::new(
                        path.key("routes").index(k),
                        format!("no route is named `{route}`"),
                    )
                    .suggest(closest(route, routes.iter().copied())),
                );
            }
        }
    }
    let section = root.key("notifiers");
    check_names(
        &section,
        "notifier",
        config.notifiers.iter().map(|n| n.name.as_str()),
        issues,
    );
    for (i, notifier) in config.notifiers.iter().enumerate() {
        for (field, message) in notifier.problems() {
            issues.push(Issue::new(section.index(i).key(field), message));
        }
    }
    let names: Vec<&str> = config.notifiers.iter().map(|n| n.name.as_str()).collect();
    let alerts = root.key("alerts");
    for (key, route) in [
        ("page", &config.alerts.page),
        ("ticket", &config.alerts.ticket),
    ] {
        let path = alerts.key(key);
        if !["critical", "error", "warning", "info"].contains(&route.severity.as_str()) {
            issues.push(Issue::new(
                path.key("severity"),
                format!(
                    "`{}` is not a severity; use critical, error, warning or info",
                    route.severity
                ),
            ));
        }
        for (k, name) in route.notify.iter().enumerate() {
            if !names.contains(&name.as_str()) {
                issues.push(
                    Issue::new(
                        path.key("notify").index(k),
                        format!("no notifier is named `{name}`"),
                    )
                    .suggest(closest(name, names.iter().copied())),
                );
            }
        }
    }
    if config.slo_state.path.trim().is_empty() {
        issues.push(Issue::new(
            root.key("slo_state").key("path"),
            "must be a file path",
        ));
    }
    if config.slo_state.save_every.as_secs() == 0 {
        issues.push(Issue::new(
            root.key("slo_state").key("save_every"),
            "must be at least 1s",
        ));
    }
}

/// Rate limits, the Redis they share, priorities, trusted proxies and concurrency.
fn check_admission(config: &Config, issues: &mut Vec<Issue>) {
    let root = FieldPath::root();
    for (i, listener) in config.listeners.iter().enumerate() {
        if let Err(message) = listener.try_trusted_proxies() {
            issues.push(Issue::new(
                root.key("listeners").index(i).key("trusted_proxies"),
                message,
            ));
        }
    }
    if let Some(redis) = &config.redis {
        let path = root.key("redis");
        if redis.url.starts_with("rediss://") {
            issues.push(Issue::new(
                path.key("url"),
                "TLS to Redis (`rediss://`) is not supported yet; use `redis://` on a \
                 trusted network or a local TLS tunnel",
            ));
        } else if let Err(message) = check_redis_url(&redis.url) {
            issues.push(Issue::new(path.key("url"), message));
        }
        non_zero(redis.timeout, path.key("timeout"), issues);
    }
    let mut limit_names: HashMap<String, FieldPath> = HashMap::new();
    let is_tcp = |listener: &str| {
        config
            .listener(listener)
            .is_some_and(|l| l.protocol == ListenerProtocol::Tcp)
    };
    for (i, route) in config.routes.iter().enumerate() {
        let path = root.key("routes").index(i);
        if let Some(fault) = &route.fault {
            if is_tcp(&route.listener) {
                issues.push(
                    Issue::new(
                        path.key("fault"),
                        "faults are injected into HTTP requests; a tcp listener's route has none",
                    )
                    .at_key(),
                );
            }
            for (field, message) in fault.problems() {
                let mut at = path.key("fault");
                for part in field.split('.') {
                    at = at.key(part);
                }
                issues.push(Issue::new(at, message));
            }
        }
        if let Some(retries) = &route.retries {
            let at = path.key("retries");
            if is_tcp(&route.listener) {
                issues.push(
                    Issue::new(
                        at.clone(),
                        "retries apply to HTTP requests; a tcp listener's route has none \
                         (a refused connect already tries another endpoint)",
                    )
                    .at_key(),
                );
            }
            for (field, message) in retries.problems() {
                issues.push(Issue::new(at.key(field), message));
            }
            if retries.on.is_empty() {
                issues.push(Issue::new(
                    at.key("on"),
                    "retries nothing; list failures such as `connect-failure` or `503`, or \
                     remove `retries`",
                ));
            }
            let on_timeout = retries.on.contains(&crate::retry::RetryOn::Timeout);
            match retries.per_try_timeout {
                None if on_timeout => issues.push(Issue::new(
                    at.key("on"),
                    "`timeout` needs `per_try_timeout`: without it an attempt uses the whole \
                     route timeout and no time is left to retry",
                )),
                Some(t) if t > route.timeout => issues.push(Issue::new(
                    at.key("per_try_timeout"),
                    format!(
                        "is longer than the route's `timeout` ({}), which bounds every attempt",
                        crate::units::format_duration(route.timeout)
                    ),
                )),
                _ => {}
            }
        }
        if is_tcp(&route.listener) && !route.rate_limit.is_empty() {
            issues.push(
                Issue::new(
                    path.key("rate_limit"),
                    "rate limits apply to HTTP requests; a tcp listener's route has none \
                     (use `limits.max_connections` on the listener)",
                )
                .at_key(),
            );
        }
        if let Some(header) = &route.priority_header {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                issues.push(Issue::new(
                    path.key("priority_header"),
                    format!("`{header}` is not a valid header name"),
                ));
            }
        }
        for (k, limit) in route.rate_limit.iter().enumerate() {
            let limit_path = path.key("rate_limit").index(k);
            if let Err(message) = limit.try_key_parts() {
                issues.push(Issue::new(limit_path.key("key"), message).suggest(closest(
                    &limit.key,
                    ["client_ip", "path", "route", "method", "header:", "cookie:"],
                )));
            }
            if limit.burst == Some(0) {
                issues.push(Issue::new(
                    limit_path.key("burst"),
                    "must be at least 1; leave it out for one period's worth",
                ));
            }
            if limit.max_keys == 0 {
                issues.push(Issue::new(limit_path.key("max_keys"), "must be at least 1"));
            }
            if limit.scope == crate::limits::Scope::Global && config.redis.is_none() {
                issues.push(
                    Issue::new(
                        limit_path.key("scope"),
                        "`scope: global` shares the count through Redis; add a top-level \
                         `redis: {url: redis://HOST:PORT}` or use `scope: local`",
                    )
                    .suggest(Some("local".into())),
                );
            }
            let name = limit
                .name
                .clone()
                .unwrap_or_else(|| format!("{}-{k}", route.name));
            if let Some(first) = limit_names.insert(name.clone(), limit_path.key("name")) {
                issues.push(Issue::new(
                    limit_path.key("name"),
                    format!("rate limit name `{name}` is already used by `{first}`"),
                ));
            }
        }
    }
    for (i, upstream) in config.upstreams.iter().enumerate() {
        if let Some(breakers) = &upstream.circuit_breakers {
            let path = root.key("upstreams").index(i).key("circuit_breakers");
            for (field, message) in breakers.problems() {
                issues.push(Issue::new(path.key(field), message));
            }
        }
        if let Some(concurrency) = &upstream.concurrency {
            let path = root.key("upstreams").index(i).key("concurrency");
            let mut users = config.routes.iter().filter(|r| r.upstream == upstream.name);
            let only_tcp = users.clone().next().is_some() && users.all(|r| is_tcp(&r.listener));
            if only_tcp {
                issues.push(
                    Issue::new(
                        path.clone(),
                        "the concurrency limit applies to HTTP requests, and only tcp \
                         listeners use this upstream",
                    )
                    .at_key(),
                );
            }
            for (field, message) in concurrency.problems() {
                issues.push(Issue::new(path.key(field), message));
            }
        }
    }
}

fn check_listeners(
    config: &Config,
    ctx: &Context,
    binds: &mut Vec<(SocketAddr, FieldPath, String)>,
    issues: &mut Vec<Issue>,
) {
    let listeners = FieldPath::root().key("listeners");
    if config.listeners.is_empty() && !ctx.listeners_unknown {
        issues.push(
            Issue::new(
                listeners.clone(),
                "no listeners; define at least one under `listeners:`",
            )
            .at_key(),
        );
    }
    let names = config.listeners.iter().map(|l| l.name.as_str());
    check_names(&listeners, "listener", names, issues);

    let routed: HashSet<&str> = config.routes.iter().map(|r| r.listener.as_str()).collect();
    for (i, listener) in config.listeners.iter().enumerate() {
        let path = listeners.index(i);
        match parse_bind(&listener.bind) {
            Ok(addr) => binds.push((
                addr,
                path.key("bind"),
                format!("listener `{}`", listener.name),
            )),
            Err((message, suggestion)) => {
                issues.push(Issue::new(path.key("bind"), message).suggest(suggestion))
            }
        }

        match (&listener.tls, listener.protocol) {
            (None, ListenerProtocol::Https) => issues.push(
                Issue::new(
                    path.key("tls"),
                    "missing; `protocol: https` needs `tls: {cert: FILE, key: FILE}`",
                )
                .at(path.key("protocol")),
            ),
            (Some(_), protocol @ (ListenerProtocol::Http | ListenerProtocol::Tcp)) => issues.push(
                Issue::new(
                    path.key("tls"),
                    format!(
                        "`tls` only applies to `protocol: https`, and this listener is `{protocol}`"
                    ),
                )
                .at_key(),
            ),
            (Some(tls), ListenerProtocol::Https) => {
                check_tls_files(tls, &path.key("tls"), ctx, issues)
            }
            (None, _) => {}
        }

        let limits = path.key("limits");
        if listener.limits.max_header_bytes.0 == 0 {
            issues.push(Issue::new(
                limits.key("max_header_bytes"),
                "must be greater than 0",
            ));
        }
        if listener.limits.max_headers == 0 {
            issues.push(Issue::new(limits.key("max_headers"), "must be at least 1"));
        }
        if listener.limits.max_connections == Some(0) {
            issues.push(Issue::new(
                limits.key("max_connections"),
                "must be at least 1; leave it out for no limit",
            ));
        }
        non_zero(
            listener.limits.header_read_timeout,
            limits.key("header_read_timeout"),
            issues,
        );
        non_zero(
            listener.limits.body_read_timeout,
            limits.key("body_read_timeout"),
            issues,
        );
        non_zero(
            listener.limits.idle_timeout,
            limits.key("idle_timeout"),
            issues,
        );

        let has_routes = routed.contains(listener.name.as_str())
            || ctx.dropped_route_listeners.contains(&listener.name);
        if !has_routes && !ctx.routes_unknown {
            issues.push(
                Issue::new(
                    path.clone(),
                    format!(
                        "listener `{0}` has no routes; add a route with `listener: {0}` \
                         or remove the listener",
                        listener.name
                    ),
                )
                .at(path.key("name")),
            );
        }
    }
}

/// Resolves a TLS file path the way the proxy will open it.
pub(crate) fn resolve(base_dir: Option<&Path>, file: &Path) -> PathBuf {
    match base_dir {
        Some(base) if file.is_relative() => base.join(file),
        _ => file.to_path_buf(),
    }
}

fn check_tls_files(tls: &Tls, path: &FieldPath, ctx: &Context, issues: &mut Vec<Issue>) {
    for (field, file, what) in [
        ("cert", &tls.cert, "certificate"),
        ("key", &tls.key, "private key"),
    ] {
        check_pem_file(file, what, path.key(field), ctx, issues);
    }
}

/// Reports a PEM file (`what`, at `field_path`) that is not given, missing, not a file or
/// unreadable, resolved the way the proxy will open it.
fn check_pem_file(
    file: &Path,
    what: &str,
    field_path: FieldPath,
    ctx: &Context,
    issues: &mut Vec<Issue>,
) {
    if file.as_os_str().is_empty() {
        issues.push(Issue::new(
            field_path,
            format!("empty; give the {what} file (PEM)"),
        ));
        return;
    }
    let resolved = resolve(ctx.base_dir.as_deref(), file);
    let shown = resolved.display();
    match std::fs::metadata(&resolved) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => issues.push(Issue::new(
            field_path,
            format!("{what} `{shown}` is not a file"),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => issues.push(Issue::new(
            field_path,
            format!("{what} file `{shown}` does not exist"),
        )),
        Err(e) => issues.push(Issue::new(
            field_path,
            format!("cannot read {what} file `{shown}`: {e}"),
        )),
    }
}

/// Reports two sockets on one address, including a wildcard address and a
/// specific one of the same family and port (the kernel refuses those too).
fn check_bind_conflicts(binds: &[(SocketAddr, FieldPath, String)], issues: &mut Vec<Issue>) {
    for (i, (addr, path, _)) in binds.iter().enumerate() {
        // Port 0 asks the kernel for a free port, so it never clashes.
        if addr.port() == 0 {
            continue;
        }
        let earlier = binds[..i].iter().find(|(other, ..)| {
            other.port() == addr.port()
                && other.is_ipv4() == addr.is_ipv4()
                && (other.ip() == addr.ip()
                    || other.ip().is_unspecified()
                    || addr.ip().is_unspecified())
        });
        if let Some((other, other_path, owner)) = earlier {
            issues.push(Issue::new(
                path.clone(),
                format!("`{addr}` clashes with `{other}` of {owner} (`{other_path}`)"),
            ));
        }
    }
}

fn check_routes(config: &Config, ctx: &Context, issues: &mut Vec<Issue>) {
    let routes = FieldPath::root().key("routes");
    check_names(
        &routes,
        "route",
        config.routes.iter().map(|r| r.name.as_str()),
        issues,
    );
    let listener_names = || config.listeners.iter().map(|l| l.name.as_str());
    let upstream_names = || config.upstreams.iter().map(|u| u.name.as_str());
    // The route already taken by each tcp listener.
    let mut tcp_routes: HashMap<&str, usize> = HashMap::new();

    for (i, route) in config.routes.iter().enumerate() {
        let path = routes.index(i);
        match config.listener(&route.listener) {
            Some(listener) if listener.protocol == ListenerProtocol::Tcp => {
                if route.matcher != Match::default() {
                    issues.push(
                        Issue::new(
                            path.key("match"),
                            format!(
                                "tcp listener `{}` carries raw bytes, so its route cannot match \
                                 on requests; remove `match`",
                                listener.name
                            ),
                        )
                        .at_key(),
                    );
                }
                if let Some(&first) = tcp_routes.get(listener.name.as_str()) {
                    issues.push(Issue::new(
                        path.key("listener"),
                        format!(
                            "tcp listener `{}` already has route `{}` (`{}`); a tcp listener \
                             takes exactly one route",
                            listener.name,
                            config.routes[first].name,
                            routes.index(first)
                        ),
                    ));
                } else {
                    tcp_routes.insert(&listener.name, i);
                }
                check_tcp_hash(config, route, &listener.name, issues);
            }
            Some(_) => {}
            None if ctx.listeners_unknown || ctx.dropped_listeners.contains(&route.listener) => {}
            None => issues.push(
                Issue::new(
                    path.key("listener"),
                    format!("no listener named `{}`", route.listener),
                )
                .suggest(closest(&route.listener, listener_names())),
            ),
        }
        let known_upstream = config.upstream(&route.upstream).is_some()
            || ctx.upstreams_unknown
            || ctx.dropped_upstreams.contains(&route.upstream);
        if !known_upstream {
            issues.push(
                Issue::new(
                    path.key("upstream"),
                    format!("no upstream named `{}`", route.upstream),
                )
                .suggest(closest(&route.upstream, upstream_names())),
            );
        }
        check_match(&route.matcher, &path.key("match"), issues);
        non_zero(route.timeout, path.key("timeout"), issues);
        non_zero(
            route.response_body_timeout,
            path.key("response_body_timeout"),
            issues,
        );
    }
}

/// A tcp connection has no headers, cookies or path: only the client IP can be hashed.
fn check_tcp_hash(
    config: &Config,
    route: &crate::schema::Route,
    listener: &str,
    issues: &mut Vec<Issue>,
) {
    let Some(j) = config
        .upstreams
        .iter()
        .position(|u| u.name == route.upstream)
    else {
        return;
    };
    let upstream = &config.upstreams[j];
    let Some(hash) = upstream
        .hash
        .as_ref()
        .filter(|_| upstream.balance.uses_hash())
    else {
        return;
    };
    match hash.key.parse::<HashKeySource>() {
        Ok(HashKeySource::ClientIp) | Err(_) => {}
        Ok(_) => issues.push(
            Issue::new(
                FieldPath::root()
                    .key("upstreams")
                    .index(j)
                    .key("hash")
                    .key("key"),
                format!(
                    "upstream `{}` serves tcp listener `{listener}` (route `{}`), which has no \
                     requests to take `{}` from; use `client_ip`",
                    upstream.name, route.name, hash.key
                ),
            )
            .suggest(Some("client_ip".into())),
        ),
    }
}

const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn check_match(matcher: &Match, path: &FieldPath, issues: &mut Vec<Issue>) {
    if let Some(host) = &matcher.host {
        if let Err(message) = check_host(host) {
            issues.push(Issue::new(path.key("host"), message));
        }
    }
    for (field, value) in [
        ("path_prefix", &matcher.path_prefix),
        ("path", &matcher.path),
    ] {
        let Some(value) = value else { continue };
        if !value.starts_with('/') {
            issues.push(
                Issue::new(path.key(field), format!("`{value}` must start with `/`"))
                    .suggest(Some(format!("/{value}"))),
            );
        } else if let Some(bad) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
            issues.push(Issue::new(
                path.key(field),
                format!("`{value}` contains {bad:?}, which a path cannot"),
            ));
        } else if value.contains(['?', '#']) {
            issues.push(Issue::new(
                path.key(field),
                format!("`{value}` contains a query or fragment; paths are matched without them"),
            ));
        }
    }
    let headers = path.key("headers");
    let mut seen = BTreeSet::new();
    for (name, value) in &matcher.headers {
        let header_path = headers.key(name);
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            issues.push(
                Issue::new(header_path, format!("`{name}` is not a valid header name")).at_key(),
            );
            continue;
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            issues.push(
                Issue::new(
                    header_path.clone(),
                    format!("header `{name}` is listed twice (header names ignore case)"),
                )
                .at_key(),
            );
        }
        if http::HeaderValue::from_str(value).is_err() {
            issues.push(Issue::new(
                header_path,
                format!("the value of header `{name}` contains characters a header value cannot"),
            ));
        }
    }
    let methods = path.key("methods");
    for (i, method) in matcher.methods.iter().enumerate() {
        let upper = method.to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            issues.push(Issue::new(
                methods.index(i),
                format!("`{method}` is not an HTTP method"),
            ));
        } else if upper != *method && KNOWN_METHODS.contains(&upper.as_str()) {
            issues.push(
                Issue::new(
                    methods.index(i),
                    format!("`{method}`: methods are case-sensitive and upper case"),
                )
                .suggest(Some(upper)),
            );
        }
    }
}

/// Whether `b` may appear in an HTTP token (RFC 9110 `tchar`): methods, cookie names.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks `match.host`: a DNS name, an IP address, or `*.` followed by a DNS name.
fn check_host(host: &str) -> Result<(), String> {
    if host == "*" {
        return Err("`*` matches every host; leave `host` out instead".into());
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("`{host}` is not a valid IPv6 address")),
        };
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.contains(':') {
        return Err(format!(
            "`{host}` has a port; `match.host` matches the host without its port"
        ));
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.contains('*') {
        return Err(format!(
            "`{host}` has a `*` in the middle; only a leading `*.` wildcard is allowed"
        ));
    }
    check_dns_name(name).map_err(|why| format!("`{host}` is not a valid host: {why}"))
}

/// Checks a DNS name (letters, digits, `-` and `_` in dot-separated labels).
fn check_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 253 {
        return Err("it is longer than 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (`..`, or a leading or trailing dot)".into());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("it contains {c:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with `-`"));
        }
    }
    // All-numeric names are mistyped IPv4 addresses, not DNS names.
    if name
        .split('.')
        .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("it looks like an IPv4 address but is not one".into());
    }
    Ok(())
}

/// Parses a bind address; errors say how to write one.
fn parse_bind(bind: &str) -> Result<SocketAddr, (String, Option<String>)> {
    if let Ok(addr) = bind.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let example = "write `IP:PORT`, like `127.0.0.1:8080`, `0.0.0.0:8080` or `[::1]:8080`";
    if !bind.is_empty() && bind.bytes().all(|b| b.is_ascii_digit()) {
        return Err((
            format!("`{bind}` has no IP address; {example}"),
            Some(format!("0.0.0.0:{bind}")),
        ));
    }
    if bind.matches(':').count() > 1 && !bind.starts_with('[') {
        return Err((
            format!("`{bind}`: write IPv6 addresses in brackets, like `[::1]:8080`"),
            None,
        ));
    }
    match bind.rsplit_once(':') {
        Some((host, port)) if host.parse::<IpAddr>().is_err() && port.parse::<u16>().is_ok() => {
            let suggestion = (host == "localhost").then(|| format!("127.0.0.1:{port}"));
            Err((
                format!("`{bind}` must use an IP address, not a host name; {example}"),
                suggestion,
            ))
        }
        Some((_, port)) if port.parse::<u16>().is_err() => Err((
            format!("`{bind}` has an invalid port `{port}` (0-65535)"),
            None,
        )),
        _ => Err((format!("`{bind}` is not a socket address; {example}"), None)),
    }
}

/// Parses an endpoint address: `ip:port`, `[ipv6]:port` or `dns-name:port`.
pub(crate) fn parse_endpoint_address(address: &str) -> Result<EndpointAddr, String> {
    if address.contains("://") {
        return Err(format!("`{address}` has a scheme; write only `host:port`"));
    }
    if let Ok(addr) = address.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!(
                "`{address}` has port 0; use the port the endpoint listens on"
            ));
        }
        return Ok(EndpointAddr::Ip(addr));
    }
    if address.starts_with('[') {
        return Err(format!("`{address}` is not a valid `[IPv6]:PORT` address"));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!(
            "`{address}` has no port; write `host:port`, like `{address}:80`"
        ));
    };
    if host.contains(':') {
        return Err(format!(
            "`{address}`: write IPv6 addresses in brackets, like `[::1]:9000`"
        ));
    }
    let port = match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("`{port}` is not a valid port (1-65535)")),
        Ok(port) => port,
    };
    if host.is_empty() {
        return Err(format!("`{address}` has no host; write `host:port`"));
    }
    if host.parse::<Ipv4Addr>().is_err() && host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("`{host}` is not a valid IPv4 address"));
    }
    // A trailing dot marks a fully qualified name.
    let name = host.strip_suffix('.').unwrap_or(host);
    check_dns_name(name).map_err(|why| format!("`{host}` is not a valid host name: {why}"))?;
    Ok(EndpointAddr::Dns {
        host: host.to_owned(),
        port,
    })
}

fn check_upstreams(config: &Config, issues: &mut Vec<Issue>) {
    let upstreams = FieldPath::root().key("upstreams");
    check_names(
        &upstreams,
        "upstream",
        config.upstreams.iter().map(|u| u.name.as_str()),
        issues,
    );
    for (i, upstream) in config.upstreams.iter().enumerate() {
        let path = upstreams.index(i);
        let endpoints = path.key("endpoints");
        if upstream.endpoints.is_empty() {
            issues.push(Issue::new(
                endpoints.clone(),
                "an upstream needs at least one endpoint",
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (k, endpoint) in upstream.endpoints.iter().enumerate() {
            let endpoint_path = endpoints.index(k);
            if let Err(message) = endpoint.parse_address() {
                issues.push(Issue::new(endpoint_path.key("address"), message));
            } else if let Some(first) = seen.insert(&endpoint.address, k) {
                issues.push(Issue::new(
                    endpoint_path.key("address"),
                    format!(
                        "`{}` is already `{}`; raise its `weight` instead of listing it twice",
                        endpoint.address,
                        endpoints.index(first)
                    ),
                ));
            }
            if !(1..=MAX_WEIGHT).contains(&endpoint.weight) {
                issues.push(Issue::new(
                    endpoint_path.key("weight"),
                    format!(
                        "{} is out of range; a weight is 1 to {MAX_WEIGHT}",
                        endpoint.weight
                    ),
                ));
            }
        }

        if !(upstream.overprovisioning.is_finite() && upstream.overprovisioning >= 1.0) {
            issues.push(Issue::new(
                path.key("overprovisioning"),
                format!(
                    "{} is out of range; it must be at least 1.0, like 1.4 (Envoy's 140%)",
                    upstream.overprovisioning
                ),
            ));
        }

        let hash_path = path.key("hash");
        match (&upstream.hash, upstream.balance.uses_hash()) {
            (None, true) => issues.push(
                Issue::new(
                    hash_path,
                    format!(
                        "missing; `balance: {}` needs `hash: {{key: ...}}` with `header:NAME`, \
                         `cookie:NAME`, `client_ip` or `path`",
                        upstream.balance
                    ),
                )
                .at(path.key("balance")),
            ),
            (Some(_), false) => issues.push(
                Issue::new(
                    hash_path,
                    format!(
                        "`hash` only applies to `balance: ring-hash` or `maglev`, and this \
                         upstream uses `{}`",
                        upstream.balance
                    ),
                )
                .at_key(),
            ),
            (Some(hash), true) => {
                if let Err(message) = hash.key.parse::<HashKeySource>() {
                    issues.push(
                        Issue::new(hash_path.key("key"), message)
                            .suggest(suggest_hash_key(&hash.key)),
                    );
                }
                if let Some(load) = hash.bounded_load {
                    if !(load.is_finite() && load > 1.0) {
                        issues.push(Issue::new(
                            hash_path.key("bounded_load"),
                            format!(
                                "{load} is out of range; it must be greater than 1.0, like 1.25"
                            ),
                        ));
                    }
                }
            }
            (None, false) => {}
        }

        if let Some(active) = upstream.health.as_ref().and_then(|h| h.active.as_ref()) {
            if let Err(errors) = active.validate() {
                for e in errors {
                    let mut field = path.key("health").key("active");
                    for part in e.field().split('.') {
                        field = field.key(part);
                    }
                    issues.push(Issue::new(field, e.to_string()));
                }
            }
        }

        if let Some(passive) = upstream.health.as_ref().and_then(|h| h.passive.as_ref()) {
            if let Err(e) = passive.outlier_config().validate() {
                issues.push(Issue::new(path.key("health").key("passive"), e.to_string()));
            }
        }

        if upstream.slow_start == Some(Duration::ZERO) {
            issues.push(Issue::new(
                path.key("slow_start"),
                "must be greater than 0s; leave it out to disable slow start",
            ));
        }
        non_zero(
            upstream.connect_timeout,
            path.key("connect_timeout"),
            issues,
        );
        non_zero(
            upstream.pool_idle_timeout,
            path.key("pool_idle_timeout"),
            issues,
        );
        non_zero(upstream.dns_refresh, path.key("dns_refresh"), issues);
    }
}

/// Checks a `redis://HOST:PORT[/DB]` or `unix:///path` URL enough that the client will
/// open it.
fn check_redis_url(text: &str) -> Result<(), String> {
    let hint = || format!("`{text}` is not a Redis URL; write it like `redis://127.0.0.1:6379`");
    let url = url::Url::parse(text).map_err(|e| format!("{}: {e}", hint()))?;
    match url.scheme() {
        "unix" | "redis+unix" if url.path().starts_with('/') => Ok(()),
        "redis" => {
            if url.host_str().is_none_or(str::is_empty) || url.port() == Some(0) {
                return Err(hint());
            }
            let db = url.path().trim_start_matches('/');
            if !db.is_empty() && db.parse::<u32>().is_err() {
                return Err(format!("`/{db}` is not a database number in `{text}`"));
            }
            Ok(())
        }
        _ => Err(hint()),
    }
}

/// Suggests a fix for a mistyped hash key such as `client-ip` or `headers:x`.
fn suggest_hash_key(key: &str) -> Option<String> {
    if let Some((prefix, name)) = key.split_once(':') {
        let fixed = closest(prefix, ["header", "cookie"])?;
        return Some(format!("{fixed}:{name}"));
    }
    closest(key, ["client_ip", "path"])
}

fn non_zero(value: Duration, path: FieldPath, issues: &mut Vec<Issue>) {
    if value.is_zero() {
        issues.push(Issue::new(path, "must be greater than 0s"));
    }
}

/// Checks that names are well formed and unique within a section.
fn check_names<'a>(
    section: &FieldPath,
    kind: &str,
    names: impl Iterator<Item = &'a str>,
    issues: &mut Vec<Issue>,
) {
    let mut first_by_name: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.enumerate() {
        let path = section.index(i).key("name");
        if name.is_empty() {
            issues.push(Issue::new(path, format!("a {kind} name cannot be empty")));
            continue;
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            issues.push(Issue::new(
                path.clone(),
                format!(
                    "`{name}` is not a valid {kind} name; use letters, digits, `-`, `_` and `.`"
                ),
            ));
        }
        if let Some(&first) = first_by_name.get(name) {
            issues.push(Issue::new(
                path,
                format!(
                    "{kind} name `{name}` is already used by `{}`",
                    section.index(first)
                ),
            ));
        } else {
            first_by_name.insert(name, i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_addresses() {
        let ok = [
            "127.0.0.1:9001",
            "[::1]:9000",
            "backend.internal:9003",
            "backend.internal.:80",
            "svc_a:1",
        ];
        for address in ok {
            assert!(parse_endpoint_address(address).is_ok(), "{address}");
        }
        assert_eq!(
            parse_endpoint_address("backend.internal:9003"),
            Ok(EndpointAddr::Dns {
                host: "backend.internal".into(),
                port: 9003
            })
        );
        let bad = [
            ("127.0.0.1", "no port"),
            ("backend", "no port"),
            ("::1:9000", "brackets"),
            ("[::1:9000", "IPv6"),
            ("http://a:80", "scheme"),
            ("a:0", "not a valid port"),
            ("a:65536", "not a valid port"),
            ("127.0.0.1:0", "port 0"),
            ("999.1.1.1:80", "IPv4"),
            ("bad host:80", "not a valid host name"),
            ("-a:80", "starts or ends"),
            (":80", "no host"),
        ];
        for (address, want) in bad {
            let err = parse_endpoint_address(address).unwrap_err();
            assert!(err.contains(want), "{address}: {err}");
        }
    }

    #[test]
    fn hosts() {
        for host in [
            "api.example.com",
            "*.example.com",
            "localhost",
            "10.0.0.1",
            "[::1]",
            "API.Example.com",
        ] {
            assert_eq!(check_host(host), Ok(()), "{host}");
        }
        for host in [
            "*",
            "a.*.com",
            "api.example.com:8080",
            "exa mple.com",
            "",
            "a..b",
            "[zz]",
        ] {
            assert!(check_host(host).is_err(), "{host}");
        }
    }

    #[test]
    fn binds() {
        assert!(parse_bind("127.0.0.1:8080").is_ok());
        assert!(parse_bind("[::1]:8080").is_ok());
        assert!(parse_bind("127.0.0.1:0").is_ok());
        assert_eq!(
            parse_bind("localhost:8080").unwrap_err().1,
            Some("127.0.0.1:8080".into())
        );
        assert_eq!(
            parse_bind("8080").unwrap_err().1,
            Some("0.0.0.0:8080".into())
        );
        assert!(parse_bind("::1:8080").unwrap_err().0.contains("brackets"));
        assert!(parse_bind("127.0.0.1:http")
            .unwrap_err()
            .0
            .contains("invalid port"));
        assert!(parse_bind("").is_err());
    }

    #[test]
    fn hash_key_suggestions() {
        assert_eq!(suggest_hash_key("client-ip"), Some("client_ip".into()));
        assert_eq!(
            suggest_hash_key("headers:x-user"),
            Some("header:x-user".into())
        );
        assert_eq!(suggest_hash_key("zzz"), None);
    }

    #[test]
    fn validate_reports_paths_without_positions() {
        let config = Config::default();
        let problems = validate(&config);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "listeners");
    }
}
