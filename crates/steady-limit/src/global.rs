//! Limits shared by every steady instance through Redis (`scope: global`).
//!
//! A `scope: local` limit is counted by each instance alone, so N instances admit N
//! times the quota. A `scope: global` limit is one count for the whole fleet: every
//! instance draws from the same bucket, kept in Redis, so the fleet together admits
//! `rate` per `per` (plus `burst`) for each key, however requests spread over instances.
//!
//! # The bucket in Redis
//!
//! Each (limit, key) is one Redis hash, `{key_prefix}{limit name}:{key}`, holding one
//! field, `tat`: the GCRA *theoretical arrival time* in microseconds of Redis' own clock
//! (`TIME`, so the instances' clocks never matter). A Lua script ([`SCRIPT`]) updates it
//! atomically: it works out how many whole tokens are available now
//! (`burst - (tat - now) / interval`), grants up to the number asked for, pushes `tat`
//! forward by what it granted, and answers `{granted, remaining, wait}` where `wait` is
//! the time until one more token. Its `PEXPIRE` is the time until the bucket is full
//! again, after which a missing key means the same thing, so idle keys vanish. Keys
//! longer than [`MAX_KEY_BYTES`] are replaced by a 128-bit hash of themselves.
//!
//! # Leases
//!
//! Asking Redis on every request would put a round trip on every request's path, so an
//! instance *leases* a few tokens at a time and hands them out locally:
//!
//! - A request takes a leased token without any I/O. It waits on Redis only when this
//!   instance holds no token for the key and no denial is cached.
//! - The lease size follows local demand: requests seen for the key in the last
//!   [`DEMAND_WINDOW`] (100 ms), between 1 and a cap of 10% of the burst or of the
//!   per-second rate, whichever is smaller. Small limits therefore lease one token at a
//!   time and stay exact (each admitted request waits one round trip); busy keys of
//!   large limits make one round trip per lease.
//! - When a busy key's lease runs down to half its size, and Redis said it had another
//!   lease's worth to spare, the next one is fetched in the background, so requests
//!   keep flowing while it is in flight.
//! - When Redis grants less than asked (nothing, or part of a lease), the bucket is
//!   empty: once the granted tokens are used, the denial is cached until a whole lease
//!   should have come back. A key over its limit thus costs about one round trip per
//!   lease interval per instance, not one per request. Requests denied from the cache
//!   are told to retry when it expires (later than one token's time by at most a
//!   lease's, so at most 100 ms).
//! - Leased tokens lapse after [`LEASE_TTL`] (1 s): an instance never sits on a key's
//!   tokens longer than that. Lapsed tokens are given back to Redis with the next fetch
//!   of that key.
//!
//! Leasing never admits more than Redis granted, so it can only under-admit, by at most
//! the tokens still held (a lease cap per instance). With three instances, that is a few
//! percent of a busy key's quota at worst.
//!
//! # When Redis fails
//!
//! Every round trip (connecting included) is bounded by [`RedisOptions::timeout`]. A
//! round trip that fails, times out, or gets an answer the script never gives counts in
//! [`RedisStore::errors`], makes [`RedisStore::available`] false, and the request gets
//! [`Unavailable`] (its caller applies `on_failure`). The store then backs off for
//! 250 ms, doubling to 1 s (with jitter): during that time requests that need Redis get
//! [`Unavailable`] at once, without I/O. After it, a single request probes Redis again
//! (reconnecting if the connection broke), and a background task also pings Redis after
//! each back-off, so recovery does not wait for a request that needs Redis (keys under a
//! lease or a cached denial make no round trips). Success brings the store back,
//! without a restart. Leased tokens and cached denials are still honoured during an
//! outage.
//!
//! # Threads and runtimes
//!
//! [`RedisStore::new`] must be called inside a Tokio runtime that keeps running (steady's
//! control runtime). All Redis I/O runs there: a request on a worker runtime that needs
//! a lease spawns the round trip onto that runtime and waits for it to wake it up. The
//! connection's driver task therefore never depends on a worker runtime, and a worker
//! that is busy never stalls other workers' Redis traffic.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, Value};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::rate::Quota;

/// How long leased tokens stay usable.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// The window local demand is measured over, and so the stretch of requests one lease
/// aims to serve.
pub const DEMAND_WINDOW: Duration = Duration::from_millis(100);

/// Longest client key written to Redis as is; longer keys are hashed.
pub const MAX_KEY_BYTES: usize = 128;

/// First back-off after a failed round trip; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Longest back-off between attempts while Redis is unavailable.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How often the local lease table drops idle keys.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The bucket script. `KEYS[1]`: the bucket. `ARGV`: emission interval (µs, may be
/// fractional), burst, tokens wanted (at least 1), tokens given back. Answers
/// `{granted, remaining, wait_us}`.
pub const SCRIPT: &str = r#"
-- Redis < 5 replicates scripts verbatim and refuses writes after TIME; newer ones
-- replicate effects and treat this as a no-op.
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local back = tonumber(ARGV[4])
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat')) or now
tat = math.max(tat - back * interval, now)
-- Whole tokens available now; the epsilon keeps exact multiples from rounding down.
local available = math.floor(burst - (tat - now) / interval + 1e-6)
if available < 0 then available = 0 end
local granted = math.min(want, available)
tat = tat + granted * interval
local wait = 0
if available - granted < 1 then
  wait = math.max(0, tat - (burst - 1) * interval - now)
end
if tat > now then
  redis.call('HSET', KEYS[1], 'tat', string.format('%.17g', tat))
  local ttl_ms = math.min(math.ceil((tat - now) / 1000) + 1, 1e15)
  redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl_ms))
else
  redis.call('DEL', KEYS[1])
end
return {granted, available - granted, math.ceil(wait)}
"#;

/// How steady talks to Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisOptions {
    /// `redis://host:port/db`.
    pub url: String,
    /// Longest wait for one Redis round trip before the request falls back.
    pub timeout: Duration,
    /// Prefix of every key steady writes.
    pub key_prefix: String,
}

/// One global limit: its name (part of the Redis key) and its quota.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalLimit {
    /// Unique name of the limit, e.g. `route/api/0`.
    pub name: String,
    /// The quota shared by all instances.
    pub quota: Quota,
}

/// The answer of a global limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalDecision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Requests the key may still send (this instance's best knowledge).
    pub remaining: u32,
    /// How long until one more request would be allowed (zero when allowed).
    pub retry_after: Duration,
}

impl GlobalDecision {
    fn allowed(remaining: u32) -> Self {
        Self {
            allowed: true,
            remaining,
            retry_after: Duration::ZERO,
        }
    }

    fn denied(retry_after: Duration) -> Self {
        Self {
            allowed: false,
            remaining: 0,
            retry_after,
        }
    }
}

/// Redis could not answer in time; the caller applies `on_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("redis unavailable")]
pub struct Unavailable;

/// The Redis key of the bucket of `key` under limit `name`.
///
/// Client keys longer than [`MAX_KEY_BYTES`] become `#` and 32 hex digits of their
/// FNV-1a 128-bit hash, so a hostile key cannot make Redis keys (or this instance's
/// table) grow without bound. The hash is fixed, so every instance and every build
/// agrees on it.
pub fn bucket_key(prefix: &str, name: &str, key: &str) -> String {
    if key.len() <= MAX_KEY_BYTES {
        format!("{prefix}{name}:{key}")
    } else {
        format!("{prefix}{name}:#{:032x}", fnv1a_128(key.as_bytes()))
    }
}

fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    bytes.iter().fold(OFFSET, |hash, &b| {
        (hash ^ u128::from(b)).wrapping_mul(PRIME)
    })
}

/// What leases for one limit look like: the largest lease and the script's arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sizing {
    /// Most tokens one lease may hold.
    cap: u32,
    /// Time one token takes to come back.
    interval: Duration,
    /// Tokens the bucket holds when full.
    burst: u32,
}

impl Sizing {
    fn new(quota: &Quota) -> Self {
        let burst = quota.burst.max(1);
        let per_second = quota.per_second();
        // 10% of a second's worth; NaN or infinite rates (zero `per`) saturate.
        let tenth_of_rate = if per_second.is_finite() {
            (per_second / 10.0).clamp(0.0, f64::from(u32::MAX)) as u32
        } else {
            u32::MAX
        };
        Self {
            cap: (burst / 10).min(tenth_of_rate).max(1),
            interval: quota.emission_interval().max(Duration::from_nanos(1)),
            burst,
        }
    }

    /// Tokens to ask for when `demand` requests arrived in the last window.
    fn want(&self, demand: u32) -> u32 {
        demand.clamp(1, self.cap)
    }

    /// Whether a lease down to `tokens` should be renewed before it runs out.
    ///
    /// Only busy keys of limits large enough to lease several tokens prefetch: for the
    /// others, a prefetched token would sit here while other instances are refused.
    fn prefetch(&self, tokens: u32, demand: u32) -> bool {
        self.cap >= 2 && demand >= 2 && tokens <= self.want(demand) / 2
    }
}

/// Requests per [`DEMAND_WINDOW`] for one key, over the current and the last window.
#[derive(Debug, Clone, Copy)]
struct Demand {
    /// Start of the current window.
    start: Instant,
    /// Requests in the current window.
    current: u32,
    /// Requests in the previous window (zero if it saw none or is long gone).
    previous: u32,
}

impl Demand {
    fn new(now: Instant) -> Self {
        Self {
            start: now,
            current: 0,
            previous: 0,
        }
    }

    fn record(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= DEMAND_WINDOW {
            self.previous = if elapsed < 2 * DEMAND_WINDOW {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.start = now;
        }
        self.current = self.current.saturating_add(1);
    }

    /// The demand estimate: the busier of the two windows.
    fn per_window(&self) -> u32 {
        self.current.max(self.previous)
    }
}

/// One request to the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fetch {
    /// Tokens asked for.
    want: u32,
    /// Lapsed tokens handed back.
    give_back: u32,
}

/// The script's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reply {
    granted: u32,
    remaining: u32,
    /// Time until one more token after this grant (zero if one is left).
    wait: Duration,
}

impl Reply {
    /// Reads `{granted, remaining, wait_us}`; `None` for anything else.
    fn parse(value: &Value, want: u32) -> Option<Reply> {
        let Value::Array(items) = value else {
            return None;
        };
        let [Value::Int(granted), Value::Int(remaining), Value::Int(wait)] = items.as_slice()
        else {
            return None;
        };
        Some(Reply {
            granted: (*granted).clamp(0, i64::from(want)) as u32,
            remaining: (*remaining).clamp(0, i64::from(u32::MAX)) as u32,
            wait: Duration::from_micros((*wait).max(0) as u64),
        })
    }
}

/// What a request does next, as decided by [`Lease::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Answer now; if a fetch is attached, start it in the background.
    Answer(GlobalDecision, Option<Fetch>),
    /// Start this fetch and wait for it.
    Fetch(Fetch),
    /// Wait for the fetch in flight.
    Wait,
}

/// This instance's state for one (limit, key): leased tokens, a cached denial, and the
/// demand that sizes the next lease. Pure: callers pass the time in.
#[derive(Debug)]
struct Lease {
    /// Leased tokens not handed out yet.
    tokens: u32,
    /// When `tokens` lapse.
    expires: Instant,
    /// Lapsed tokens to give back with the next fetch.
    give_back: u32,
    /// Redis granted nothing: requests are denied locally until then.
    denied_until: Option<Instant>,
    /// Tokens Redis had left after the last grant.
    remote_remaining: u32,
    /// A fetch is in flight.
    fetching: bool,
    /// Fetches completed so far; waiters compare it to see that theirs ended.
    fetches: u64,
    /// The last completed fetch failed.
    failed: bool,
    demand: Demand,
    /// Last request for the key, for the idle sweep.
    last_used: Instant,
}

impl Lease {
    fn new(now: Instant) -> Self {
        Self {
            tokens: 0,
            expires: now,
            give_back: 0,
            denied_until: None,
            remote_remaining: 0,
            fetching: false,
            fetches: 0,
            failed: false,
            demand: Demand::new(now),
            last_used: now,
        }
    }

    /// Counts a new request.
    fn arrive(&mut self, now: Instant) {
        self.demand.record(now);
        self.last_used = now;
    }

    /// Serves a request from local state if possible, or says which fetch it needs.
    fn step(&mut self, now: Instant, sizing: &Sizing) -> Step {
        if self.tokens > 0 && now >= self.expires {
            self.give_back = self.give_back.saturating_add(self.tokens);
            self.tokens = 0;
        }
        let denied = self.denied_until.filter(|&until| now < until);
        if self.tokens > 0 {
            self.tokens -= 1;
            let decision =
                GlobalDecision::allowed(self.tokens.saturating_add(self.remote_remaining));
            let demand = self.demand.per_window();
            // Prefetch only while Redis had a lease's worth to spare: on an overloaded
            // key it would only bring back a denial.
            let prefetch = (!self.fetching
                && denied.is_none()
                && self.remote_remaining >= sizing.want(demand)
                && sizing.prefetch(self.tokens, demand))
            .then(|| self.begin_fetch(sizing));
            return Step::Answer(decision, prefetch);
        }
        if let Some(until) = denied {
            return Step::Answer(GlobalDecision::denied(until - now), None);
        }
        if self.fetching {
            Step::Wait
        } else {
            Step::Fetch(self.begin_fetch(sizing))
        }
    }

    fn begin_fetch(&mut self, sizing: &Sizing) -> Fetch {
        self.fetching = true;
        Fetch {
            want: sizing.want(self.demand.per_window()),
            give_back: std::mem::take(&mut self.give_back),
        }
    }

    /// Records the outcome of `fetch` (`None`: it failed).
    fn finish(&mut self, now: Instant, fetch: Fetch, reply: Option<Reply>, sizing: &Sizing) {
        self.fetching = false;
        self.fetches += 1;
        self.failed = reply.is_none();
        let Some(reply) = reply else { return };
        self.remote_remaining = reply.remaining;
        if reply.granted > 0 {
            self.tokens = self.tokens.saturating_add(reply.granted);
            self.expires = now + LEASE_TTL;
        }
        // Short of a full lease, the bucket is empty now. Once the tokens granted are
        // gone, stay away until the rest of a lease should be back, not just one token:
        // an overloaded key then costs about one round trip per lease, not per request.
        self.denied_until = (reply.granted < fetch.want).then(|| {
            let rest = sizing.interval.saturating_mul(fetch.want - 1);
            now + reply.wait.saturating_add(rest)
        });
    }

    /// Whether the sweep may forget this key: nothing held, nothing cached, idle.
    fn idle(&self, now: Instant) -> bool {
        !self.fetching
            && self.denied_until.is_none_or(|until| until <= now)
            && now.saturating_duration_since(self.last_used) >= 2 * LEASE_TTL
    }
}

/// The back-off between attempts while Redis is unavailable.
#[derive(Debug, Default)]
struct Backoff {
    /// Failed round trips in a row.
    failures: u32,
    /// No round trip starts before then.
    closed_until: Option<Instant>,
}

impl Backoff {
    /// Whether a round trip may start now. Once a back-off ends, one round trip probes
    /// and the others keep failing fast for `probe` or until it answers.
    fn admit(&mut self, now: Instant, probe: Duration) -> bool {
        match self.closed_until {
            Some(until) if now < until => false,
            Some(_) => {
                self.closed_until = Some(now + probe);
                true
            }
            None => true,
        }
    }

    /// Time left of the current back-off.
    fn remaining(&self, now: Instant) -> Duration {
        self.closed_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    fn succeed(&mut self) {
        self.failures = 0;
        self.closed_until = None;
    }

    /// Records a failure and returns the back-off it starts.
    fn fail(&mut self, now: Instant, jitter: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(8);
        let delay = BACKOFF_MIN
            .saturating_mul(1 << doublings)
            .min(BACKOFF_MAX)
            .mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0));
        self.closed_until = Some(now + delay);
        delay
    }
}

/// One (limit, key) in the local table.
#[derive(Debug)]
struct Entry {
    /// The Redis key of the bucket.
    bucket: String,
    lease: Mutex<Lease>,
    /// Woken when a fetch completes.
    changed: Notify,
}

/// The local leases, by Redis key.
#[derive(Debug)]
struct Table {
    entries: HashMap<String, Arc<Entry>>,
    last_sweep: Instant,
}

struct Inner {
    options: RedisOptions,
    /// `None` if the URL does not parse: every round trip then fails.
    client: Option<redis::Client>,
    /// The runtime all Redis I/O runs on (the one `new` was called in).
    runtime: Option<Handle>,
    /// The shared connection, established on first use and dropped when it breaks.
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    script: redis::Script,
    table: Mutex<Table>,
    backoff: Mutex<Backoff>,
    available: AtomicBool,
    /// A background probe is pinging a Redis that is down.
    probing: AtomicBool,
    /// Decisions that ran out of `timeout` while Redis itself answered.
    late: AtomicU64,
    errors: AtomicU64,
    calls: AtomicU64,
}

/// The connection to Redis and this instance's leases.
///
/// Cheap to share behind an `Arc`; [`check`](RedisStore::check) may be called from any
/// thread and any runtime.
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("options", &self.inner.options)
            .field("available", &self.available())
            .field("errors", &self.errors())
            .field("redis_calls", &self.redis_calls())
            .field("keys", &self.keys())
            .finish()
    }
}

impl RedisStore {
    /// Prepares a store; never fails (Redis may be down at start and come up later).
    ///
    /// Call it inside the Tokio runtime that should carry the Redis I/O; it connects in
    /// the background. Outside any runtime, every check is [`Unavailable`].
    pub fn new(options: RedisOptions) -> Self {
        let client = match redis::Client::open(options.url.as_str()) {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::error!(url = %options.url, error = %e, "invalid redis url: global limits cannot reach redis");
                None
            }
        };
        let runtime = Handle::try_current().ok();
        if runtime.is_none() {
            tracing::error!(
                "RedisStore::new called outside a tokio runtime: global limits cannot reach redis"
            );
        }
        let inner = Arc::new(Inner {
            options,
            client,
            runtime,
            connection: tokio::sync::Mutex::new(None),
            script: redis::Script::new(SCRIPT),
            table: Mutex::new(Table {
                entries: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            backoff: Mutex::new(Backoff::default()),
            available: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            late: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        });
        if let Some(runtime) = &inner.runtime {
            let warm = Arc::clone(&inner);
            runtime.spawn(async move {
                if !warm.ping().await {
                    Inner::spawn_probe(&warm);
                }
            });
        }
        Self { inner }
    }

    /// Takes one request's worth of `limit` for `key`.
    ///
    /// Answers from the local lease when it can; otherwise waits for one round trip to
    /// Redis (at most [`RedisOptions::timeout`]), or fails at once while Redis is known
    /// to be down.
    pub async fn check(
        &self,
        limit: &GlobalLimit,
        key: &str,
    ) -> Result<GlobalDecision, Unavailable> {
        // One deadline for the whole decision, not only for each round trip: waiters
        // queued behind a key's fetches (one in flight per key) must not wait for
        // round trip after round trip.
        let decision =
            match tokio::time::timeout(self.inner.options.timeout, self.decide(limit, key)).await {
                Ok(decision) => decision,
                Err(_) => {
                    self.inner.late.fetch_add(1, Ordering::Relaxed);
                    return Err(Unavailable);
                }
            };
        if decision.is_err() {
            // Redis is down: make sure something notices when it comes back.
            Inner::spawn_probe(&self.inner);
        }
        decision
    }

    async fn decide(&self, limit: &GlobalLimit, key: &str) -> Result<GlobalDecision, Unavailable> {
        let sizing = Sizing::new(&limit.quota);
        let entry = self.inner.entry(&limit.name, key);
        entry.lease.lock().arrive(Instant::now());
        // The completed-fetch count when this request started waiting.
        let mut waiting_since: Option<u64> = None;
        loop {
            let mut changed = pin!(entry.changed.notified());
            // Registered before looking, so a fetch ending in between still wakes us.
            changed.as_mut().enable();
            let step = {
                let mut lease = entry.lease.lock();
                if waiting_since.is_some_and(|seen| lease.fetches != seen) && lease.failed {
                    return Err(Unavailable);
                }
                let step = lease.step(Instant::now(), &sizing);
                waiting_since = Some(lease.fetches);
                step
            };
            match step {
                Step::Answer(decision, prefetch) => {
                    if let Some(fetch) = prefetch {
                        self.inner.start_fetch(&entry, fetch, sizing);
                    }
                    return Ok(decision);
                }
                Step::Fetch(fetch) => {
                    if !self.inner.start_fetch(&entry, fetch, sizing) {
                        return Err(Unavailable);
                    }
                }
                Step::Wait => {}
            }
            changed.await;
        }
    }

    /// Whether the last round trip to Redis succeeded.
    pub fn available(&self) -> bool {
        self.inner.available.load(Ordering::Relaxed)
    }

    /// Decisions that took longer than [`RedisOptions::timeout`] in all (waiting behind
    /// other requests' fetches of the same key) and fell back to `on_failure`.
    pub fn late(&self) -> u64 {
        self.inner.late.load(Ordering::Relaxed)
    }

    /// Round trips to Redis that failed or timed out since start.
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Round trips to Redis attempted since start (leases, and the initial ping).
    pub fn redis_calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Keys this instance currently tracks (idle ones are dropped within seconds).
    pub fn keys(&self) -> usize {
        self.inner.table.lock().entries.len()
    }
}

/// Finishes a fetch however its task ends: with a reply, an error, or dropped unrun
/// (its runtime shut down), so waiters are always woken.
struct InFlight {
    entry: Arc<Entry>,
    fetch: Fetch,
    sizing: Sizing,
    reply: Option<Reply>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.entry
            .lease
            .lock()
            .finish(Instant::now(), self.fetch, self.reply.take(), &self.sizing);
        self.entry.changed.notify_waiters();
    }
}

/// Why a round trip failed.
enum Failure {
    /// No runtime, a bad URL, a broken connection or a timeout.
    Down(String),
    /// Redis answered with an error or with something the script never returns; the
    /// connection itself is fine.
    BadReply(String),
}

impl Inner {
    /// The entry of (`name`, `key`), created if new; sweeps idle entries now and then.
    fn entry(&self, name: &str, key: &str) -> Arc<Entry> {
        let bucket = bucket_key(&self.options.key_prefix, name, key);
        let now = Instant::now();
        let mut table = self.table.lock();
        if now.saturating_duration_since(table.last_sweep) >= SWEEP_INTERVAL {
            table.last_sweep = now;
            // An entry a request still holds is never dropped: its lease would fork.
            table
                .entries
                .retain(|_, e| Arc::strong_count(e) > 1 || !e.lease.lock().idle(now));
        }
        if let Some(entry) = table.entries.get(&bucket) {
            return Arc::clone(entry);
        }
        let entry = Arc::new(Entry {
            bucket: bucket.clone(),
            lease: Mutex::new(Lease::new(now)),
            changed: Notify::new(),
        });
        table.entries.insert(bucket, Arc::clone(&entry));
        entry
    }

    /// Starts `fetch` on the Redis runtime; `false` (and the fetch marked failed) while
    /// backing off. Must be called without the entry's lock held.
    fn start_fetch(self: &Arc<Self>, entry: &Arc<Entry>, fetch: Fetch, sizing: Sizing) -> bool {
        let in_flight = InFlight {
            entry: Arc::clone(entry),
            fetch,
            sizing,
            reply: None,
        };
        let Some(runtime) = self.runtime.as_ref().filter(|_| self.admit()) else {
            drop(in_flight);
            return false;
        };
        let inner = Arc::clone(self);
        runtime.spawn(async move {
            let mut in_flight = in_flight;
            in_flight.reply = inner
                .lease(&in_flight.entry.bucket, fetch, sizing)
                .await
                .ok();
        });
        true
    }

    /// Whether a round trip may start now (see [`Backoff::admit`]).
    fn admit(&self) -> bool {
        let probe = self.options.timeout.saturating_mul(2).max(BACKOFF_MIN);
        self.backoff.lock().admit(Instant::now(), probe)
    }

    /// Runs the script once for `bucket`.
    async fn lease(
        &self,
        bucket: &str,
        fetch: Fetch,
        sizing: Sizing,
    ) -> Result<Reply, Unavailable> {
        let interval_us = sizing.interval.as_secs_f64() * 1e6;
        let outcome = self
            .round_trip(async {
                let mut connection = self.connection().await?;
                self.script
                    .key(bucket)
                    .arg(interval_us)
                    .arg(sizing.burst)
                    .arg(fetch.want)
                    .arg(fetch.give_back)
                    .invoke_async::<Value>(&mut connection)
                    .await
            })
            .await
            .and_then(|value| {
                Reply::parse(&value, fetch.want)
                    .ok_or_else(|| Failure::BadReply(format!("unexpected script reply {value:?}")))
            });
        self.settle(outcome)
    }

    /// While Redis is down, pings it after each back-off until it answers, so recovery
    /// (and [`RedisStore::available`]) does not depend on a request happening to need
    /// Redis: keys under a cached denial or a lease make no round trips.
    fn spawn_probe(self: &Arc<Self>) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let delay = {
                    let Some(inner) = weak.upgrade() else { return };
                    if inner.available.load(Ordering::Relaxed) {
                        inner.probing.store(false, Ordering::Release);
                        return;
                    }
                    let remaining = inner.backoff.lock().remaining(Instant::now());
                    remaining
                };
                tokio::time::sleep(delay.max(Duration::from_millis(50))).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.ping().await {
                    inner.probing.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }

    /// Checks the connection (at start, and while Redis is down), so
    /// [`RedisStore::available`] means something without request traffic.
    async fn ping(&self) -> bool {
        let outcome = self
            .round_trip(async {
                let mut connection = self.connection().await?;
                redis::cmd("PING")
                    .query_async::<Value>(&mut connection)
                    .await
            })
            .await;
        self.settle(outcome).is_ok()
    }

    /// Runs one exchange with Redis within the timeout, connecting first if needed.
    async fn round_trip<F>(&self, exchange: F) -> Result<Value, Failure>
    where
        F: std::future::Future<Output = redis::RedisResult<Value>>,
    {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.client.is_none() {
            return Err(Failure::Down("invalid redis url".into()));
        }
        // Bound to a variable so the exchange (which may hold the connection lock) is
        // dropped before `disconnect` takes that lock.
        let outcome = tokio::time::timeout(self.options.timeout, exchange).await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if is_reply_error(&e) => Err(Failure::BadReply(e.to_string())),
            Ok(Err(e)) => {
                self.disconnect().await;
                Err(Failure::Down(e.to_string()))
            }
            Err(_) => {
                self.disconnect().await;
                Err(Failure::Down(format!(
                    "no answer within {:?}",
                    self.options.timeout
                )))
            }
        }
    }

    /// Updates availability, counters and back-off after a round trip.
    fn settle<T>(&self, outcome: Result<T, Failure>) -> Result<T, Unavailable> {
        match outcome {
            Ok(value) => {
                self.backoff.lock().succeed();
                if !self.available.swap(true, Ordering::Relaxed) {
                    tracing::info!(url = %self.options.url, "redis available");
                }
                Ok(value)
            }
            Err(failure) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let delay = self.backoff.lock().fail(Instant::now(), fastrand::f64());
                let was_available = self.available.swap(false, Ordering::Relaxed);
                let reason = match &failure {
                    Failure::Down(reason) | Failure::BadReply(reason) => reason,
                };
                if was_available {
                    tracing::warn!(url = %self.options.url, error = %reason, retry_in = ?delay, "redis unavailable");
                } else {
                    tracing::debug!(url = %self.options.url, error = %reason, retry_in = ?delay, "redis round trip failed");
                }
                Err(Unavailable)
            }
        }
    }

    /// The shared connection, connecting if there is none.
    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let Some(client) = &self.client else {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "invalid redis url",
            )));
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.timeout))
            .set_response_timeout(Some(self.options.timeout));
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets a broken connection so the next round trip reconnects.
    async fn disconnect(&self) {
        *self.connection.lock().await = None;
    }
}

/// Whether Redis itself answered with an error (the connection is fine).
fn is_reply_error(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(rate: u32, per: Duration, burst: u32) -> Quota {
        Quota { rate, per, burst }
    }

    fn reply(granted: u32, remaining: u32, wait_ms: u64) -> Option<Reply> {
        Some(Reply {
            granted,
            remaining,
            wait: Duration::from_millis(wait_ms),
        })
    }

    #[test]
    fn long_keys_are_hashed_and_short_ones_kept() {
        assert_eq!(
            bucket_key("steady:", "api", "1.2.3.4"),
            "steady:api:1.2.3.4"
        );
        let a = bucket_key("p:", "n", &"x".repeat(10_000));
        let b = bucket_key("p:", "n", &format!("{}y", "x".repeat(9_999)));
        assert_eq!(a.len(), "p:n:#".len() + 32);
        assert_ne!(a, b);
        assert_eq!(a, bucket_key("p:", "n", &"x".repeat(10_000)));
        // A key exactly at the bound stays readable.
        let edge = "k".repeat(MAX_KEY_BYTES);
        assert!(bucket_key("", "n", &edge).ends_with(&edge));
    }

    #[test]
    fn leases_are_capped_at_a_tenth_of_burst_or_rate() {
        let s = Sizing::new(&quota(1000, Duration::from_secs(1), 100));
        assert_eq!(s.cap, 10);
        assert_eq!(s.want(0), 1);
        assert_eq!(s.want(4), 4);
        assert_eq!(s.want(5000), 10);
        // A small limit leases one token at a time and never prefetches.
        let small = Sizing::new(&quota(5, Duration::from_secs(60), 5));
        assert_eq!(small.cap, 1);
        assert!(!small.prefetch(0, 1000));
        // Degenerate quotas do not panic.
        let zero = Sizing::new(&quota(0, Duration::ZERO, 0));
        assert_eq!((zero.cap, zero.burst), (1, 1));
        assert!(zero.interval > Duration::ZERO);
    }

    #[test]
    fn demand_counts_the_last_window() {
        let t0 = Instant::now();
        let mut d = Demand::new(t0);
        for _ in 0..30 {
            d.record(t0);
        }
        assert_eq!(d.per_window(), 30);
        d.record(t0 + DEMAND_WINDOW);
        assert_eq!(d.per_window(), 30, "the previous window still counts");
        d.record(t0 + 4 * DEMAND_WINDOW);
        assert_eq!(d.per_window(), 1, "a quiet spell forgets it");
    }

    #[test]
    fn a_lease_serves_locally_then_fetches() {
        let sizing = Sizing::new(&quota(1000, Duration::from_secs(1), 100));
        let t0 = Instant::now();
        let mut lease = Lease::new(t0);
        lease.arrive(t0);
        let Step::Fetch(fetch) = lease.step(t0, &sizing) else {
            panic!("an empty lease fetches");
        };
        assert_eq!(
            fetch,
            Fetch {
                want: 1,
                give_back: 0
            }
        );
        assert_eq!(lease.step(t0, &sizing), Step::Wait, "one fetch at a time");
        lease.finish(t0, fetch, reply(1, 99, 0), &sizing);
        let Step::Answer(d, None) = lease.step(t0, &sizing) else {
            panic!("a leased token answers locally");
        };
        assert!(d.allowed);
        assert_eq!(d.remaining, 99);
    }

    #[test]
    fn busy_keys_lease_more_and_prefetch() {
        let sizing = Sizing::new(&quota(1000, Duration::from_secs(1), 100));
        let t0 = Instant::now();
        let mut lease = Lease::new(t0);
        for _ in 0..50 {
            lease.arrive(t0);
        }
        let Step::Fetch(fetch) = lease.step(t0, &sizing) else {
            panic!("fetch");
        };
        assert_eq!(fetch.want, 10);
        lease.finish(t0, fetch, reply(10, 50, 0), &sizing);
        let mut prefetched = None;
        for i in 0..10 {
            match lease.step(t0, &sizing) {
                Step::Answer(d, p) => {
                    assert!(d.allowed, "token {i}");
                    if p.is_some() {
                        prefetched = Some(i);
                        break;
                    }
                }
                other => panic!("token {i}: {other:?}"),
            }
        }
        // Down to five tokens (the sixth request) the next lease is fetched ahead.
        assert_eq!(prefetched, Some(4));
        assert!(lease.fetching);
    }

    #[test]
    fn denials_are_cached_for_a_lease_interval() {
        let sizing = Sizing::new(&quota(1000, Duration::from_secs(1), 100));
        let t0 = Instant::now();
        let mut lease = Lease::new(t0);
        for _ in 0..50 {
            lease.arrive(t0);
        }
        let Step::Fetch(fetch) = lease.step(t0, &sizing) else {
            panic!("fetch");
        };
        lease.finish(t0, fetch, reply(0, 0, 1), &sizing);
        // 1 ms for one token, 9 ms more for the rest of a 10-token lease.
        let Step::Answer(d, None) = lease.step(t0, &sizing) else {
            panic!("cached denial");
        };
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(10));
        assert!(matches!(
            lease.step(t0 + Duration::from_millis(10), &sizing),
            Step::Fetch(_)
        ));
    }

    #[test]
    fn lapsed_tokens_are_given_back() {
        let sizing = Sizing::new(&quota(1000, Duration::from_secs(1), 100));
        let t0 = Instant::now();
        let mut lease = Lease::new(t0);
        for _ in 0..50 {
            lease.arrive(t0);
        }
        let Step::Fetch(fetch) = lease.step(t0, &sizing) else {
            panic!("fetch");
        };
        lease.finish(t0, fetch, reply(10, 0, 0), &sizing);
        let later = t0 + LEASE_TTL;
        lease.arrive(later);
        let Step::Fetch(fetch) = lease.step(later, &sizing) else {
            panic!("a lapsed lease fetches again");
        };
        assert_eq!(fetch.give_back, 10);
        // A failed fetch is reported to waiters.
        lease.finish(later, fetch, None, &sizing);
        assert!(lease.failed);
        assert!(!lease.fetching);
    }

    #[test]
    fn back_off_doubles_to_a_second_and_probes_once() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let probe = Duration::from_millis(100);
        assert!(b.admit(t0, probe));
        assert_eq!(b.fail(t0, 0.0), Duration::from_millis(250));
        assert!(!b.admit(t0 + Duration::from_millis(100), probe));
        let t1 = t0 + Duration::from_millis(250);
        assert!(b.admit(t1, probe), "the probe");
        assert!(!b.admit(t1, probe), "only one probe");
        assert_eq!(b.fail(t1, 0.0), Duration::from_millis(500));
        assert_eq!(b.fail(t1, 0.0), Duration::from_secs(1));
        assert_eq!(b.fail(t1, 0.0), Duration::from_secs(1));
        assert_eq!(b.fail(t1, 1.0), Duration::from_millis(800));
        b.succeed();
        assert!(b.admit(t1, probe));
    }

    #[test]
    fn odd_replies_are_rejected() {
        assert_eq!(Reply::parse(&Value::Nil, 1), None);
        assert_eq!(Reply::parse(&Value::Array(vec![Value::Int(1)]), 1), None);
        let v = Value::Array(vec![Value::Int(99), Value::Int(-3), Value::Int(-1)]);
        assert_eq!(
            Reply::parse(&v, 5),
            Some(Reply {
                granted: 5,
                remaining: 0,
                wait: Duration::ZERO
            })
        );
    }
}
