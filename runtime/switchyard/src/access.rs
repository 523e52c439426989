//! Who may connect: Channels' `OriginValidator` and the client address
//! behind trusted proxies.
//!
//! Origins (`[access] allowed-origins`) follow Channels exactly: a missing
//! `Origin` header is denied unless `"*"` is listed; a pattern without a
//! scheme is compared by host name with Django's `is_same_domain`
//! (`.example.com` matches the domain and its subdomains); a pattern with a
//! scheme must match scheme, host and port (80 for http/ws, 443 for
//! https/wss by default). A denied handshake is answered 403.
//!
//! `X-Forwarded-For` is believed only from a peer in `[access]
//! trusted-proxies` (addresses or CIDR blocks): the client is then the
//! right-most address in the header that is not itself a trusted proxy (so
//! a client cannot forge its address by prepending entries), with the port
//! from `X-Forwarded-Port` (0 without it), as Daphne does with
//! `--proxy-headers`. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what
//! a dual-stack listener reports for an IPv4 peer) is trusted as its IPv4
//! address.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};
use ipnet::IpNet;

/// Channels' `OriginValidator`.
#[derive(Debug, Clone)]
pub(crate) struct OriginPolicy {
    any: bool,
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
enum Pattern {
    /// No scheme: host name only, `is_same_domain` rules.
    Domain(String),
    /// Scheme, host and port must all match.
    Origin(Origin),
}

/// A parsed `Origin` (or pattern): lower-case scheme and host, the port
/// (explicit or the scheme's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl OriginPolicy {
    /// Build from the configured list; an unusable pattern is an error.
    pub(crate) fn new(allowed: &[String]) -> Result<Self, String> {
        let mut policy = Self {
            any: false,
            patterns: Vec::new(),
        };
        for pattern in allowed {
            let lower = pattern.to_ascii_lowercase();
            if lower == "*" {
                policy.any = true;
            } else if lower.contains("://") {
                let origin = Origin::parse(&lower)
                    .ok_or_else(|| format!("`{pattern}` is not a scheme://host[:port] origin"))?;
                policy.patterns.push(Pattern::Origin(origin));
            } else {
                let host = host_of(&lower);
                if host.is_empty() {
                    return Err(format!("`{pattern}` has no host name"));
                }
                policy.patterns.push(Pattern::Domain(host.to_owned()));
            }
        }
        Ok(policy)
    }

    /// Whether a handshake with this `Origin` header (raw bytes, decoded as
    /// ISO-8859-1 as Channels does) may go on.
    pub(crate) fn allows(&self, origin: Option<&[u8]>) -> bool {
        if self.any {
            return true;
        }
        let Some(raw) = origin else {
            return false;
        };
        let text: String = raw
            .iter()
            .map(|&b| char::from(b).to_ascii_lowercase())
            .collect();
        let Some(origin) = Origin::parse(&text) else {
            return false;
        };
        self.patterns.iter().any(|pattern| match pattern {
            Pattern::Domain(domain) => is_same_domain(&origin.host, domain),
            Pattern::Origin(allowed) => {
                allowed.scheme == origin.scheme
                    && allowed.port == origin.port
                    && is_same_domain(&origin.host, &allowed.host)
            }
        })
    }
}

impl Origin {
    /// Parse `scheme://host[:port][/...]` (already lower-case). `None` when
    /// there is no scheme or no host (e.g. the `null` origin).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.split_once("://")?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return None;
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        // Drop userinfo, as urlparse does.
        let authority = authority.rsplit('@').next().unwrap_or_default();
        let host = host_of(authority);
        if host.is_empty() {
            return None;
        }
        let port_text = port_text(authority);
        let port = match port_text {
            Some(text) => Some(text.parse::<u16>().ok()?),
            None => match scheme {
                "http" | "ws" => Some(80),
                "https" | "wss" => Some(443),
                _ => None,
            },
        };
        Some(Self {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            port,
        })
    }
}

/// The host of `host[:port]`, without IPv6 brackets.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    authority.split(':').next().unwrap_or_default()
}

/// The text after the port colon of `host:port`, if any.
fn port_text(authority: &str) -> Option<&str> {
    let after_host = match authority.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(_, after)| after),
        None => authority.find(':').map_or("", |at| &authority[at..]),
    };
    after_host.strip_prefix(':').filter(|p| !p.is_empty())
}

/// Django's `is_same_domain`: `pattern` is the host itself, or starts with
/// `.` and the host is that domain or a subdomain of it.
fn is_same_domain(host: &str, pattern: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    match pattern.strip_prefix('.') {
        Some(domain) => host == domain || host.ends_with(pattern),
        None => host == pattern,
    }
}

/// `[access] trusted-proxies`: the peers whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parse the configured entries: an address (`10.0.0.1`, `::1`) or a
    /// CIDR block (`10.0.0.0/8`, `fd00::/8`). A bad entry is an error naming it.
    pub(crate) fn new(entries: &[String]) -> Result<Self, String> {
        let nets = entries
            .iter()
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!(
                            "`{entry}` is not an IP address or CIDR block \
                             (e.g. \"10.0.0.1\", \"10.0.0.0/8\", \"fd00::/8\")"
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    /// Whether `ip` is a trusted proxy; an IPv4-mapped IPv6 address counts
    /// as its IPv4 address.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.nets
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    }
}

/// The client's address: the peer, or what a trusted proxy says.
pub(crate) fn client_addr(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> SocketAddr {
    if !trusted.contains(peer.ip()) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = None;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            // An unparsable hop: nothing left of it can be believed.
            break;
        };
        client = Some(ip);
        if !trusted.contains(ip) {
            break;
        }
    }
    let Some(ip) = client else {
        return peer;
    };
    let port = headers
        .get("x-forwarded-port")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u16>().ok())
        .unwrap_or(0);
    SocketAddr::new(ip, port)
}

/// The `Origin` header's bytes, if present.
pub(crate) fn origin_header(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get(header::ORIGIN).map(|v| v.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn policy(patterns: &[&str]) -> OriginPolicy {
        let owned: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        OriginPolicy::new(&owned).expect("valid patterns")
    }

    #[test]
    fn missing_origin_is_denied_unless_star() {
        assert!(!policy(&["example.com"]).allows(None));
        assert!(policy(&["*"]).allows(None));
        assert!(!policy(&["example.com"]).allows(Some(b"null")));
    }

    #[test]
    fn domain_patterns_follow_is_same_domain() {
        let p = policy(&[".example.com", "allowed.org"]);
        assert!(p.allows(Some(b"https://example.com")));
        assert!(p.allows(Some(b"http://sub.example.com:8080")));
        assert!(p.allows(Some(b"HTTP://ALLOWED.ORG")));
        assert!(!p.allows(Some(b"http://sub.allowed.org")));
        assert!(!p.allows(Some(b"http://badexample.com")));
        assert!(!p.allows(Some(b"http://example.com.evil.net")));
    }

    #[test]
    fn scheme_patterns_match_scheme_host_and_port() {
        let p = policy(&["https://example.com", "http://localhost:8000"]);
        assert!(p.allows(Some(b"https://example.com")));
        assert!(p.allows(Some(b"https://example.com:443")));
        assert!(!p.allows(Some(b"http://example.com")));
        assert!(!p.allows(Some(b"https://example.com:8443")));
        assert!(p.allows(Some(b"http://localhost:8000")));
        assert!(!p.allows(Some(b"http://localhost")));
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets() {
        let p = policy(&["http://[::1]:8000"]);
        assert!(p.allows(Some(b"http://[::1]:8000")));
        assert!(!p.allows(Some(b"http://[::1]:8001")));
        assert_eq!(
            Origin::parse("ws://[::1]").expect("valid"),
            Origin {
                scheme: "ws".into(),
                host: "::1".into(),
                port: Some(80)
            }
        );
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(OriginPolicy::new(&["https://".to_owned()]).is_err());
        assert!(OriginPolicy::new(&[":80".to_owned()]).is_err());
    }

    fn trusted(entries: &[&str]) -> TrustedProxies {
        let owned: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
        TrustedProxies::new(&owned).expect("valid entries")
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    fn forwarded(hops: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static(hops));
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let mut headers = forwarded("6.6.6.6, 203.0.113.9, 10.0.0.2");
        headers.insert("x-forwarded-port", HeaderValue::from_static("4431"));
        let proxy = addr("10.0.0.1:5000");
        let stranger = addr("198.51.100.7:5000");
        let trusted = trusted(&["10.0.0.1", "10.0.0.2"]);
        assert_eq!(
            client_addr(proxy, &headers, &trusted),
            addr("203.0.113.9:4431"),
            "right-most untrusted hop; the forged 6.6.6.6 is ignored"
        );
        assert_eq!(client_addr(stranger, &headers, &trusted), stranger);
        assert_eq!(client_addr(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    #[test]
    fn a_peer_inside_a_trusted_block_is_trusted_and_one_outside_is_not() {
        let trusted = trusted(&["10.0.0.0/8", "fd00::/8", "::1", "127.0.0.1"]);
        let headers = forwarded("203.0.113.9");
        for inside in [
            "10.1.2.3:80",
            "10.255.255.255:80",
            "[fd12::7]:80",
            "[::1]:80",
        ] {
            assert_eq!(
                client_addr(addr(inside), &headers, &trusted),
                addr("203.0.113.9:0"),
                "{inside} is trusted"
            );
        }
        for outside in ["11.0.0.1:80", "127.0.0.2:80", "[fe00::1]:80", "[::2]:80"] {
            assert_eq!(
                client_addr(addr(outside), &headers, &trusted),
                addr(outside),
                "{outside} is not trusted"
            );
        }
    }

    #[test]
    fn the_hop_walk_stops_at_the_first_untrusted_hop() {
        let trusted = trusted(&["10.0.0.0/8"]);
        let proxy = addr("10.0.0.1:5000");
        // From the right: 10.9.9.9 is a trusted proxy, 203.0.113.9 is not, so
        // it is the client; 10.1.1.1 and 6.6.6.6 to its left are its claims.
        let headers = forwarded("6.6.6.6, 10.1.1.1, 203.0.113.9, 10.9.9.9");
        assert_eq!(
            client_addr(proxy, &headers, &trusted),
            addr("203.0.113.9:0")
        );
        // Every hop trusted: the left-most one is the client.
        let headers = forwarded("10.3.3.3, 10.2.2.2");
        assert_eq!(client_addr(proxy, &headers, &trusted), addr("10.3.3.3:0"));
        // An unparsable hop ends the walk at the last address believed.
        let headers = forwarded("203.0.113.9, junk, 10.2.2.2");
        assert_eq!(client_addr(proxy, &headers, &trusted), addr("10.2.2.2:0"));
    }

    #[test]
    fn an_ipv4_mapped_peer_is_trusted_as_its_ipv4_address() {
        let headers = forwarded("203.0.113.9");
        let mapped = addr("[::ffff:127.0.0.1]:5000");
        for entries in [
            &["127.0.0.1"][..],
            &["127.0.0.0/8"],
            &["::ffff:127.0.0.0/104"],
        ] {
            assert_eq!(
                client_addr(mapped, &headers, &trusted(entries)),
                addr("203.0.113.9:0"),
                "{entries:?}"
            );
        }
        let other = addr("[::ffff:127.0.0.2]:5000");
        assert_eq!(
            client_addr(other, &headers, &trusted(&["127.0.0.1"])),
            other
        );
        // A mapped hop is matched the same way.
        let headers = forwarded("203.0.113.9, ::ffff:10.0.0.2");
        assert_eq!(
            client_addr(addr("10.0.0.1:80"), &headers, &trusted(&["10.0.0.0/8"])),
            addr("203.0.113.9:0")
        );
    }

    #[test]
    fn bad_trusted_proxy_entries_are_refused_by_name() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0.1/",
            "localhost",
            "",
            "fd00::/129",
            "10.0.0.0 /8",
        ] {
            let err = TrustedProxies::new(&[bad.to_owned()]).expect_err(bad);
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
        // A host-bits-set block is accepted as written (10.1.2.3/8 = 10.0.0.0/8).
        assert!(trusted(&["10.1.2.3/8"]).contains("10.200.0.1".parse().expect("ip")));
    }
}
