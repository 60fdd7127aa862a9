//! Callback targets must not reach the operator's own network: loopback, private, link-local,
//! CGNAT, multicast and cloud-metadata addresses are refused. The check runs in the HTTP client's
//! DNS resolver, so the address checked is the address connected to (no DNS-rebinding window),
//! and IP literals are checked before any request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Whether a callback may connect to `ip`.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let seg = v6.segments();
            // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks).
            if seg[..6].iter().all(|s| *s == 0) && !v6.is_loopback() && !v6.is_unspecified() {
                let o = v6.octets();
                return forbidden_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            // 6to4 (2002::/16) carries an IPv4 address in its next 32 bits.
            if seg[0] == 0x2002 {
                return forbidden_v4(Ipv4Addr::new(
                    (seg[1] >> 8) as u8,
                    seg[1] as u8,
                    (seg[2] >> 8) as u8,
                    seg[2] as u8,
                ));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (incl. fd00:ec2::254)
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
                || (seg[0] == 0x64 && seg[1] == 0xff9b) // NAT64 of possibly private v4
                || (seg[0] == 0x2001 && seg[1] == 0) // Teredo tunnels
                || (seg[0] & 0xffc0) == 0xfec0 // deprecated site-local
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254 (cloud metadata)
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking
        || o[0] >= 240 // reserved
}

/// A resolver that returns only addresses a callback may use.
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_forbidden(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves only to forbidden (private, loopback or metadata) addresses"
                )
                .into());
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// Checks a URL before it is accepted (at session or endpoint creation): an IP literal or
/// `localhost` must be allowed; a name that resolves must resolve to an allowed address. A name
/// that does not resolve yet is accepted: the guard at connection time still applies.
pub async fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
    let host = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => return check_ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => return check_ip(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
        None => return Err("has no host".into()),
    };
    if host == "localhost" || host.ends_with(".localhost") {
        return Err("points at localhost".into());
    }
    let lookup = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::lookup_host((host.as_str(), 0)),
    )
    .await;
    if let Ok(Ok(addrs)) = lookup {
        for a in addrs {
            check_ip(a.ip()).map_err(|e| format!("resolves to a forbidden address: {e}"))?;
        }
    }
    Ok(())
}

/// A literal IP target, checked before connecting (the resolver is not consulted for those).
pub fn check_ip(ip: IpAddr) -> Result<(), String> {
    if is_forbidden(ip) {
        Err(format!(
            "{ip} is a loopback, private, link-local or metadata address"
        ))
    } else {
        Ok(())
    }
}

/// The literal IP of a URL's host, if it is one.
pub fn literal_ip(url: &str) -> Option<IpAddr> {
    match url::Url::parse(url).ok()?.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_forbidden(bad.parse().expect("ip")), "{bad}");
        }
        for good in ["8.8.8.8", "1.1.1.1", "100.128.0.1", "2606:4700:4700::1111"] {
            assert!(!is_forbidden(good.parse().expect("ip")), "{good}");
        }
    }

    #[tokio::test]
    async fn checks_urls() {
        assert!(check_url("http://127.0.0.1:9/x").await.is_err());
        assert!(check_url("http://[::1]/x").await.is_err());
        assert!(check_url("http://localhost:8080/").await.is_err());
        assert!(
            check_url("http://169.254.169.254/latest/meta-data")
                .await
                .is_err()
        );
        assert!(check_url("https://93.184.216.34/hook").await.is_ok());
        assert!(check_url("https://unresolvable.invalid/hook").await.is_ok());
    }
}
