//! Per-client limits on what anyone on the internet can do without a key: open status streams,
//! claim attempts, console login failures. A client is its address (an IPv6 client its /64, so
//! rotating addresses inside one allocation does not buy more), or the address a trusted reverse
//! proxy names in `server.trusted_proxy_header`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use crate::config::Config;

use super::error::{ApiError, Code};
use super::{AppState, Req, Response, error_response};

/// The connection's peer, set by the accept loop as a request extension.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Whether `ip` is inside `net/len`.
fn in_net(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn trusted(config: &Config, ip: IpAddr) -> bool {
    config.trusted_proxies.iter().any(|n| in_net(ip, *n))
}

/// Who sent the request: the peer, unless the peer is a trusted proxy and the configured header
/// names a client (the rightmost entry that is not itself a trusted proxy: entries to its left
/// were written by the client and prove nothing).
pub fn client_of(config: &Config, req: &Req) -> Option<IpAddr> {
    let peer = req.peer?.ip();
    let key = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
        },
        v4 => v4,
    };
    let Some(header) = config.server.trusted_proxy_header.as_deref() else {
        return Some(key(peer));
    };
    if !trusted(config, peer) {
        return Some(key(peer));
    }
    // From the right: skip our own proxies; the first other entry is the client. An entry that
    // is not an address (a port, `unknown`, an obfuscated `_name`) ends the walk at the peer:
    // skipping it would let a client's own forged entry to its left stand in for it.
    let entries: Vec<&str> = req
        .headers
        .get_all(header)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for entry in entries.into_iter().rev() {
        match entry_ip(entry) {
            Some(ip) if trusted(config, ip) => continue,
            Some(ip) => client = ip,
            None => {}
        }
        break;
    }
    Some(key(client))
}

/// One entry of `X-Forwarded-For` or `Forwarded` as an address: `1.2.3.4`, `1.2.3.4:5678`,
/// `2001:db8::1`, `[2001:db8::1]:443`, or RFC 7239's `for="[2001:db8::1]:443"` (other
/// parameters of the element ignored).
fn entry_ip(entry: &str) -> Option<IpAddr> {
    let mut e = entry.trim();
    if let Some(f) = e.split(';').map(str::trim).find_map(|p| {
        p.get(..4)
            .filter(|k| k.eq_ignore_ascii_case("for="))
            .map(|_| &p[4..])
    }) {
        e = f.trim().trim_matches('"');
    }
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = e.strip_prefix('[') {
        return rest
            .split_once(']')?
            .0
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(IpAddr::V6);
    }
    e.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// Counts per client, forgotten once idle so the maps stay as small as the set of live clients.
#[derive(Default)]
pub struct ClientLimits {
    streams: Mutex<HashMap<IpAddr, usize>>,
    /// (minute, counts in it): claims. Console logins have durable lockouts instead
    /// (`engine::operators`).
    claims: Mutex<(i64, HashMap<IpAddr, u32>)>,
    /// Payment link opens: each creates a session that holds a payment slot.
    link_opens: Mutex<(i64, HashMap<IpAddr, u32>)>,
}

/// Holds one of a client's stream slots; dropping it (the stream ended) frees the slot.
#[derive(Clone)]
pub struct StreamSlot {
    _inner: Arc<SlotInner>,
}

struct SlotInner {
    limits: Arc<ClientLimits>,
    ip: IpAddr,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        if let Ok(mut m) = self.limits.streams.lock()
            && let Some(n) = m.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

fn minute() -> i64 {
    chrono::Utc::now().timestamp_millis().div_euclid(60_000)
}

/// Adds one to `ip`'s count this minute; false (and nothing counted) when it is at `max`.
fn count_in_minute(
    window: &Mutex<(i64, HashMap<IpAddr, u32>)>,
    ip: IpAddr,
    max: u32,
    add: bool,
) -> bool {
    let Ok(mut w) = window.lock() else {
        return false;
    };
    let now = minute();
    if w.0 != now {
        *w = (now, HashMap::new());
    }
    let n = w.1.entry(ip).or_insert(0);
    if *n >= max {
        return false;
    }
    if add {
        *n += 1;
    }
    true
}

impl ClientLimits {
    /// A stream slot for `ip`, unless it already holds `max`.
    pub fn open_stream(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<StreamSlot> {
        let mut m = self.streams.lock().ok()?;
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        drop(m);
        Some(StreamSlot {
            _inner: Arc::new(SlotInner {
                limits: self.clone(),
                ip,
            }),
        })
    }

    /// Counts a claim attempt; false when `ip` has made `max` this minute.
    pub fn claim(&self, ip: IpAddr, max: u32) -> bool {
        count_in_minute(&self.claims, ip, max, true)
    }

    /// Counts a payment link open; false when `ip` has made `max` this minute.
    pub fn link_open(&self, ip: IpAddr, max: u32) -> bool {
        count_in_minute(&self.link_opens, ip, max, true)
    }
}

/// Seconds to the next minute, for Retry-After.
fn rest_of_minute() -> u64 {
    let ms = chrono::Utc::now().timestamp_millis().rem_euclid(60_000);
    u64::try_from((60_000 - ms) / 1000).unwrap_or(60).max(1)
}

fn too_many(code: Code, message: String, retry_after: u64) -> Response {
    error_response(&ApiError::new(code, message).retry_after(retry_after))
}

/// `/c/{id}/…` behind the per-client caps: a claim past its cap is answered before anything is
/// looked up, written or sent to a chain; a status stream past its cap is refused, and an
/// accepted one holds its slot (via the response) until the stream ends.
pub async fn page(
    state: &AppState,
    req: &Req,
    rest: &[&str],
    handler: impl std::future::Future<Output = Response>,
) -> Response {
    let server = &state.config.server;
    let mut slot = None;
    if let Some(ip) = client_of(&state.config, req) {
        match (req.method.as_str(), rest) {
            ("POST", ["claim"]) if !state.limits.claim(ip, server.claims_per_minute) => {
                return too_many(
                    Code::TooManyClaims,
                    format!(
                        "at most {} claims a minute from one client; retry later",
                        server.claims_per_minute
                    ),
                    rest_of_minute(),
                );
            }
            ("GET", ["events"]) => match state.limits.open_stream(ip, server.streams_per_client) {
                Some(s) => slot = Some(s),
                None => {
                    return too_many(
                        Code::TooManyStreams,
                        format!(
                            "at most {} live status streams from one client; the page falls back to polling",
                            server.streams_per_client
                        ),
                        5,
                    );
                }
            },
            _ => {}
        }
    }
    let mut r = handler.await;
    if let Some(s) = slot
        && r.status().is_success()
    {
        r.extensions_mut().insert(s);
    }
    r
}

/// The host part of `host[:port]` (brackets of an IPv6 literal removed), lower-cased.
fn host_part(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        a.rsplit_once(':').map_or(a, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                a
            }
        })
    };
    host.to_ascii_lowercase()
}

/// The operator listener answers only to its own names, so a web page whose domain was rebound
/// to 127.0.0.1 cannot drive it from a browser: `server.admin_allowed_hosts`, else the listen
/// address and the loopback names. `None` when the request may go on.
pub fn admin_host_refused(config: &Config, req: &Req) -> Option<Response> {
    let Some(authority) = req.authority.as_deref() else {
        return Some(error_response(&ApiError::new(
            Code::HostMissing,
            "the request names no Host",
        )));
    };
    let host = host_part(authority);
    let allowed = if config.server.admin_allowed_hosts.is_empty() {
        let listen = config.admin_listen.ip();
        ["localhost", "127.0.0.1", "::1"].contains(&host.as_str())
            // The listen address itself, 0.0.0.0 included: the CLI dials what the daemon bound.
            || host == listen.to_string()
    } else {
        config
            .server
            .admin_allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(authority) || host_part(h) == host)
    };
    if allowed {
        return None;
    }
    Some(error_response(&ApiError::new(
        Code::HostNotAllowed,
        format!(
            "the operator listener does not answer to host {host:?}; add it to server.admin_allowed_hosts"
        ),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_parts() {
        assert_eq!(host_part("LocalHost:8081"), "localhost");
        assert_eq!(host_part("[::1]:8081"), "::1");
        assert_eq!(host_part("evil.example"), "evil.example");
        assert_eq!(host_part("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn forwarded_entries_with_ports_and_rfc7239_forms_are_addresses() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(entry_ip(" 1.2.3.4 "), ip("1.2.3.4"));
        assert_eq!(entry_ip("1.2.3.4:5678"), ip("1.2.3.4"));
        assert_eq!(entry_ip("2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(entry_ip("[2001:db8::1]:443"), ip("2001:db8::1"));
        assert_eq!(
            entry_ip("for=\"[2001:db8::1]:443\";proto=https"),
            ip("2001:db8::1")
        );
        assert_eq!(entry_ip("For=192.0.2.60;by=203.0.113.43"), ip("192.0.2.60"));
        assert_eq!(entry_ip("unknown"), None);
        assert_eq!(entry_ip("_hidden"), None);
    }

    #[test]
    fn networks_match_by_prefix() {
        let net = ("10.1.0.0".parse().unwrap(), 16);
        assert!(in_net("10.1.200.3".parse().unwrap(), net));
        assert!(!in_net("10.2.0.1".parse().unwrap(), net));
        assert!(in_net(
            "1.2.3.4".parse().unwrap(),
            ("0.0.0.0".parse().unwrap(), 0)
        ));
        let v6 = ("2001:db8::".parse().unwrap(), 32);
        assert!(in_net("2001:db8:1::5".parse().unwrap(), v6));
        assert!(!in_net("10.1.0.1".parse().unwrap(), v6));
    }

    #[test]
    fn a_minute_window_caps_and_counts_only_what_it_allows() {
        let l = ClientLimits::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.claim(ip, 2));
        assert!(l.claim(ip, 2));
        assert!(!l.claim(ip, 2));
        assert!(l.claim("192.0.2.2".parse().unwrap(), 2));
    }
}
