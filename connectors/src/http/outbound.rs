//! Which destinations an outbound call may reach: public addresses, and internal ones only
//! where the operator opened them.
//!
//! Connectors call URLs that workflow authors and connection owners choose (`http.request`'s
//! `url`, a connection's `base_url`, an OAuth `token_url`, a connection test's `probe`), so an
//! unchecked call could reach the machine's own services, the private network or a cloud
//! metadata endpoint (server-side request forgery). Every call a [`super::Client`] makes is
//! checked here:
//!
//! - the scheme must be `http` or `https`;
//! - a host name is resolved once, by the client's resolver ([`super::Client`] installs one),
//!   and only the addresses that pass are handed to the connector, so the address checked is
//!   the address connected to (no second lookup a rebinding DNS server could answer
//!   differently);
//! - an IP-literal URL (which never reaches a resolver) is checked before the request is sent;
//! - every redirect hop is checked again the same way;
//! - cloud metadata host names are refused by name, whatever they resolve to.
//!
//! Refused: loopback, unspecified, private, link-local, shared (CGNAT), unique-local,
//! multicast, broadcast, documentation and other reserved ranges ([`Blocked`]), and IPv6
//! forms that embed a refused IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`,
//! 6to4 `2002::/16`). An [`OutboundPolicy`] opens specific hosts and ranges again:
//!
//! ```
//! use connectors::http::OutboundPolicy;
//!
//! let policy: OutboundPolicy = "127.0.0.1,10.0.0.0/8,internal.example.com".parse()?;
//! assert!(policy.check_ip("10.1.2.3".parse()?).is_ok());
//! assert!(policy.check_ip("192.168.0.1".parse()?).is_err());
//! assert!(OutboundPolicy::default().check_ip("127.0.0.1".parse()?).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use reqwest::Url;

/// Where the operator opens a refused destination (named in every refusal).
pub const ALLOW_FLAG: &str = "--allow-outbound";
/// The environment variable of [`ALLOW_FLAG`].
pub const ALLOW_ENV: &str = "SWITCHYARD_ALLOW_OUTBOUND";

/// Host names of cloud metadata services, refused by name: they hand out the machine's
/// credentials, and some resolve only inside the cloud (so the address check alone would
/// depend on where the lookup happens).
pub const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "metadata.azure.com",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.oraclecloud.com",
    "metadata.platformequinix.com",
];

/// The destinations internal addresses are opened for; everything public is always allowed.
///
/// The default opens nothing: every address in [`Blocked`] and every [`METADATA_HOSTS`] name
/// is refused. Parsed from a comma-separated list of IP addresses, CIDR ranges and host names
/// (`127.0.0.1,10.0.0.0/8,internal.example.com`; `*.corp.example.com` opens every name under
/// `corp.example.com`). An opened host name may resolve to any address; an opened address or
/// range is reachable under any name that resolves to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    entries: Vec<Allowed>,
}

/// One entry of an [`OutboundPolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// Exactly this host name (lowercase, no trailing dot).
    Host(String),
    /// This name and every name under it (stored without the `*.`).
    Subdomains(String),
    /// An address range.
    Net(Net),
}

/// An IP range: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// Whether the first `prefix` bits of `a` and `b` (both left-aligned in a `u128`) agree.
fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    a & mask == b & mask
}

/// Why an [`OutboundPolicy`] could not be parsed: the entry and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("outbound allowlist entry `{entry}`: {problem}")]
pub struct ParseError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl FromStr for OutboundPolicy {
    type Err = ParseError;

    /// A comma-separated list; blanks around entries and empty entries are ignored, so `""`
    /// is the default policy.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut entries = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = parse_entry(entry).map_err(|problem| ParseError {
                entry: entry.to_owned(),
                problem,
            })?;
            if !entries.contains(&parsed) {
                entries.push(parsed);
            }
        }
        Ok(OutboundPolicy { entries })
    }
}

fn parse_entry(entry: &str) -> Result<Allowed, &'static str> {
    if entry.contains("://") {
        return Err("give a host name, an IP address or a CIDR range, not a URL");
    }
    if let Some((addr, prefix)) = entry.split_once('/') {
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| "the part before `/` is not an IP address")?;
        let full = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= full)
            .ok_or(if addr.is_ipv4() {
                "the prefix length must be a number from 0 to 32"
            } else {
                "the prefix length must be a number from 0 to 128"
            })?;
        let net = Net { addr, prefix };
        // `10.1.0.0/8` is most likely a typo for `10.0.0.0/8` or `10.1.0.0/16`: say so rather
        // than guess which.
        if canonical_net(net) != net {
            return Err(
                "the address has bits set past the prefix length (write the range's first address)",
            );
        }
        return Ok(Allowed::Net(net));
    }
    // `[::1]` as in a URL.
    let bare = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    if let Ok(addr) = bare.parse::<IpAddr>() {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        return Ok(Allowed::Net(Net { addr, prefix }));
    }
    let (wildcard, name) = match entry.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, entry),
    };
    let name = normalize_host(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err("not a host name, an IP address or a CIDR range");
    }
    // A name made only of digits and dots would be read as an address by URL parsers.
    if name
        .split('.')
        .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("not a valid IP address");
    }
    Ok(if wildcard {
        Allowed::Subdomains(name)
    } else {
        Allowed::Host(name)
    })
}

/// `net` with the bits past its prefix cleared.
fn canonical_net(net: Net) -> Net {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(net.prefix))
        .unwrap_or(0);
    let addr = match net.addr {
        IpAddr::V4(a) => {
            let bits = (u128::from(u32::from(a)) << 96) & mask;
            IpAddr::V4(Ipv4Addr::from(u32::try_from(bits >> 96).unwrap_or(0)))
        }
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
    };
    Net {
        addr,
        prefix: net.prefix,
    }
}

/// Lowercase, without a trailing dot (`Example.COM.` and `example.com` are one host).
fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl fmt::Display for OutboundPolicy {
    /// The comma-separated form [`FromStr`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match entry {
                Allowed::Host(name) => f.write_str(name)?,
                Allowed::Subdomains(name) => write!(f, "*.{name}")?,
                Allowed::Net(net) => write!(f, "{net}")?,
            }
        }
        Ok(())
    }
}

impl serde::Serialize for OutboundPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for OutboundPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl OutboundPolicy {
    /// Loopback only (`127.0.0.0/8`, `::1`): for tests against local fakes.
    pub fn loopback() -> Self {
        OutboundPolicy {
            entries: vec![
                net(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
                net(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
            ],
        }
    }

    /// Loopback and the private ranges (`10/8`, `172.16/12`, `192.168/16`, `fc00::/7`): what
    /// `switchyard dev` opens, since it runs on a person's own machine next to what they are
    /// trying out. Link-local (and with it the metadata address `169.254.169.254`) stays shut.
    pub fn local_development() -> Self {
        let mut policy = OutboundPolicy::loopback();
        policy.entries.extend([
            net(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8),
            net(IpAddr::V4(Ipv4Addr::new(172, 16, 0, 0)), 12),
            net(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)), 16),
            net(IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)), 7),
        ]);
        policy
    }

    /// This policy opening also what `other` opens.
    #[must_use]
    pub fn union(mut self, other: &OutboundPolicy) -> Self {
        for entry in &other.entries {
            if !self.entries.contains(entry) {
                self.entries.push(entry.clone());
            }
        }
        self
    }

    /// Whether it opens nothing (the default).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `host` (a name, not an address) is opened by name.
    fn opens_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.entries.iter().any(|entry| match entry {
            Allowed::Host(name) => *name == host,
            Allowed::Subdomains(name) => {
                host == *name
                    || host
                        .strip_suffix(name.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
            Allowed::Net(_) => false,
        })
    }

    /// Whether `ip` lies in an opened range (an IPv4-mapped IPv6 address counts as its IPv4
    /// address).
    fn opens_ip(&self, ip: IpAddr) -> bool {
        let plain = ip.to_canonical();
        self.entries.iter().any(|entry| match entry {
            Allowed::Net(net) => net.contains(ip) || net.contains(plain),
            Allowed::Host(_) | Allowed::Subdomains(_) => false,
        })
    }

    /// `Ok` when `ip` is public or opened; otherwise what kind of address it is.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Blocked> {
        match classify_ip(ip) {
            Some(blocked) if !self.opens_ip(ip) => Err(blocked),
            _ => Ok(()),
        }
    }

    /// Checks what can be checked of `url` without resolving it: the scheme, an IP-literal
    /// host, a metadata host name. A host name that passes is checked again, address by
    /// address, when the client resolves it.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused {
                host: url.scheme().to_owned(),
                address: None,
                reason: Reason::Scheme,
            });
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(Refused {
                host: String::new(),
                address: None,
                reason: Reason::NoHost,
            });
        };
        // The URL parser has already turned every IPv4 spelling (`0x7f000001`, `2130706433`,
        // `0177.0.0.1`, `127.1`) into dotted decimal, and IPv6 into brackets.
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => self.check_literal(ip),
            Err(_) => self.check_name(host),
        }
    }

    fn check_literal(&self, ip: IpAddr) -> Result<(), Refused> {
        self.check_ip(ip).map_err(|blocked| Refused {
            host: ip.to_string(),
            address: Some(ip),
            reason: Reason::Address(blocked),
        })
    }

    /// Refuses a metadata host name unless it is opened by name.
    pub fn check_name(&self, host: &str) -> Result<(), Refused> {
        let name = normalize_host(host);
        if METADATA_HOSTS.contains(&name.as_str()) && !self.opens_host(&name) {
            return Err(Refused {
                host: name,
                address: None,
                reason: Reason::Metadata,
            });
        }
        Ok(())
    }

    /// The addresses `host` resolved to that may be connected to; when none may, the refusal
    /// of the first.
    pub fn filter_resolved(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refused> {
        self.check_name(host)?;
        let by_name = self.opens_host(host);
        let mut kept = Vec::new();
        let mut first = None;
        for addr in addrs {
            match self.check_ip(addr.ip()) {
                Ok(()) => kept.push(addr),
                Err(_) if by_name => kept.push(addr),
                Err(blocked) => {
                    first.get_or_insert(Refused {
                        host: normalize_host(host),
                        address: Some(addr.ip()),
                        reason: Reason::Address(blocked),
                    });
                }
            }
        }
        match (kept.is_empty(), first) {
            (true, Some(refused)) => Err(refused),
            _ => Ok(kept),
        }
    }
}

fn net(addr: IpAddr, prefix: u8) -> Allowed {
    Allowed::Net(Net { addr, prefix })
}

/// The kinds of address refused unless opened. Everything else is public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// `127.0.0.0/8`, `::1`: this machine.
    Loopback,
    /// `0.0.0.0/8`, `::`: "this host", which connects to this machine.
    Unspecified,
    /// `10/8`, `172.16/12`, `192.168/16` (RFC 1918), and the deprecated site-local `fec0::/10`.
    Private,
    /// `169.254/16`, `fe80::/10`: the local link, where cloud metadata services answer.
    LinkLocal,
    /// `100.64/10` (RFC 6598): carrier-grade NAT, often a provider's internal network.
    SharedAddressSpace,
    /// `fc00::/7` (RFC 4193): IPv6's private ranges.
    UniqueLocal,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Documentation, benchmarking, protocol-assignment and future-use ranges, and IPv6
    /// transition prefixes that cannot be checked (`192.0.0.0/24`, `192.0.2.0/24`,
    /// `198.18.0.0/15`, `198.51.100.0/24`, `203.0.113.0/24`, `240/4`, `100::/64`,
    /// `2001::/23`, `2001:db8::/32`, `64:ff9b:1::/48`, `::/96` forms of no IPv4 address).
    Reserved,
}

impl Blocked {
    /// `loopback`, `private`, …: as written in refusals.
    pub fn as_str(self) -> &'static str {
        match self {
            Blocked::Loopback => "loopback",
            Blocked::Unspecified => "unspecified",
            Blocked::Private => "private",
            Blocked::LinkLocal => "link-local",
            Blocked::SharedAddressSpace => "shared (carrier-grade NAT)",
            Blocked::UniqueLocal => "unique-local",
            Blocked::Multicast => "multicast",
            Blocked::Broadcast => "broadcast",
            Blocked::Reserved => "reserved",
        }
    }
}

impl fmt::Display for Blocked {
    /// With its article: `a loopback`, `an unspecified`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let article = match self {
            Blocked::Unspecified => "an",
            _ => "a",
        };
        write!(f, "{article} {}", self.as_str())
    }
}

/// What kind of internal address `ip` is, or `None` for a public one.
///
/// IPv6 addresses that stand for an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
/// IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`) are judged
/// by that IPv4 address, since a dual-stack host or a translator connects to it.
pub fn classify_ip(ip: IpAddr) -> Option<Blocked> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Blocked> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => Blocked::Unspecified,
        (127, ..) => Blocked::Loopback,
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => Blocked::Private,
        (169, 254, _) => Blocked::LinkLocal,
        (100, 64..=127, _) => Blocked::SharedAddressSpace,
        (224..=239, ..) => Blocked::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => Blocked::Broadcast,
        (240..=255, ..)
        | (192, 0, 0 | 2)
        | (192, 88, 99)
        | (198, 18..=19, _)
        | (198, 51, 100)
        | (203, 0, 113) => Blocked::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Blocked> {
    if ip.is_unspecified() {
        return Some(Blocked::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Blocked::Loopback);
    }
    let bits = u128::from(ip);
    let seg = ip.segments();
    let embedded_v4 = || Ipv4Addr::from(u32::try_from(bits & 0xffff_ffff).unwrap_or(0));
    // ::ffff:a.b.c.d (IPv4-mapped): a dual-stack socket connects to a.b.c.d.
    if bits >> 32 == 0xffff {
        return classify_v4(embedded_v4());
    }
    // ::a.b.c.d (IPv4-compatible, deprecated, never routable itself; `::` and `::1` are
    // above).
    if bits >> 32 == 0 {
        return Some(classify_v4(embedded_v4()).unwrap_or(Blocked::Reserved));
    }
    // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): the translator connects to a.b.c.d.
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return classify_v4(embedded_v4());
    }
    // 6to4 2002:AABB:CCDD::/48 (RFC 3056): relays reach a.b.c.d = AA.BB.CC.DD.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::from((u32::from(seg[1]) << 16) | u32::from(seg[2]));
        return classify_v4(v4);
    }
    match seg[0] {
        0xff00..=0xffff => Some(Blocked::Multicast),
        0xfe80..=0xfebf => Some(Blocked::LinkLocal),
        0xfec0..=0xfeff => Some(Blocked::Private),
        0xfc00..=0xfdff => Some(Blocked::UniqueLocal),
        // 2001::/23: Teredo (embeds obfuscated IPv4), benchmarking, ORCHID and other
        // protocol assignments; 2001:db8::/32: documentation.
        0x2001 if seg[1] < 0x0200 || seg[1] == 0x0db8 => Some(Blocked::Reserved),
        // 64:ff9b:1::/48 (RFC 8215): local-use translation, whose IPv4 part is not at a
        // fixed place; 100::/64: discard-only.
        0x0064 if seg[1] == 0xff9b && seg[2] == 0x0001 => Some(Blocked::Reserved),
        0x0100 if seg[1..4] == [0, 0, 0] => Some(Blocked::Reserved),
        _ => None,
    }
}

/// Why a call was refused before any connection was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The host as the URL named it (a name or an address), or the scheme for
    /// [`Reason::Scheme`].
    pub host: String,
    /// The address refused, when an address was.
    pub address: Option<IpAddr>,
    /// Why.
    pub reason: Reason,
}

/// What made a [`Refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not an `http` or `https` URL.
    Scheme,
    /// A URL without a host.
    NoHost,
    /// The address is internal.
    Address(Blocked),
    /// A cloud metadata host name.
    Metadata,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = "no connection was made";
        match (self.reason, self.address) {
            (Reason::Scheme, _) => write!(
                f,
                "refused to call a `{}:` URL: only http and https are allowed; {tail}",
                self.host
            ),
            (Reason::NoHost, _) => write!(f, "refused to call a URL without a host; {tail}"),
            (Reason::Metadata, _) => write!(
                f,
                "refused to call {}: a cloud metadata service name, which the outbound policy blocks; {tail}. `{ALLOW_FLAG} {}` ({ALLOW_ENV}) opens it",
                self.host, self.host
            ),
            (Reason::Address(kind), Some(ip)) if self.host == ip.to_string() => write!(
                f,
                "refused to call {ip}: {kind} address, which the outbound policy blocks; {tail}. `{ALLOW_FLAG} {ip}` ({ALLOW_ENV}) opens it"
            ),
            (Reason::Address(kind), Some(ip)) => write!(
                f,
                "refused to call {}: it resolves to {ip}, {kind} address, which the outbound policy blocks; {tail}. `{ALLOW_FLAG} {}` ({ALLOW_ENV}) opens it",
                self.host, self.host
            ),
            (Reason::Address(kind), None) => write!(
                f,
                "refused to call {}: {kind} address, which the outbound policy blocks; {tail}",
                self.host
            ),
        }
    }
}

impl std::error::Error for Refused {}

/// The refusal somewhere under `error` (a client error wraps a resolver's or a redirect
/// policy's), when the call was refused.
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        current = err.source();
    }
    None
}

/// The client's resolver: the system's lookup, keeping only the addresses the policy allows.
#[derive(Debug)]
pub(crate) struct FilteringResolver {
    pub(crate) policy: Arc<OutboundPolicy>,
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Before the lookup: a metadata name is refused without asking DNS about it.
            policy.check_name(&host)?;
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept = policy.filter_resolved(&host, found)?;
            if kept.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the name resolved to no address",
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_classified() {
        let cases = [
            ("127.0.0.1", Some(Blocked::Loopback)),
            ("127.255.255.254", Some(Blocked::Loopback)),
            ("::1", Some(Blocked::Loopback)),
            ("0.0.0.0", Some(Blocked::Unspecified)),
            ("0.1.2.3", Some(Blocked::Unspecified)),
            ("::", Some(Blocked::Unspecified)),
            ("10.0.0.1", Some(Blocked::Private)),
            ("172.16.0.1", Some(Blocked::Private)),
            ("172.31.255.255", Some(Blocked::Private)),
            ("192.168.1.1", Some(Blocked::Private)),
            ("fec0::1", Some(Blocked::Private)),
            ("169.254.169.254", Some(Blocked::LinkLocal)),
            ("fe80::1", Some(Blocked::LinkLocal)),
            ("100.64.0.1", Some(Blocked::SharedAddressSpace)),
            ("100.127.255.255", Some(Blocked::SharedAddressSpace)),
            ("fd00::1", Some(Blocked::UniqueLocal)),
            ("fc00::1", Some(Blocked::UniqueLocal)),
            ("224.0.0.1", Some(Blocked::Multicast)),
            ("239.255.255.250", Some(Blocked::Multicast)),
            ("ff02::1", Some(Blocked::Multicast)),
            ("255.255.255.255", Some(Blocked::Broadcast)),
            ("240.0.0.1", Some(Blocked::Reserved)),
            ("192.0.2.1", Some(Blocked::Reserved)),
            ("192.0.0.8", Some(Blocked::Reserved)),
            ("198.18.0.1", Some(Blocked::Reserved)),
            ("198.51.100.7", Some(Blocked::Reserved)),
            ("203.0.113.9", Some(Blocked::Reserved)),
            ("2001:db8::1", Some(Blocked::Reserved)),
            ("2001::1", Some(Blocked::Reserved)),
            ("64:ff9b:1::1", Some(Blocked::Reserved)),
            ("100::1", Some(Blocked::Reserved)),
        ];
        for (text, expected) in cases {
            assert_eq!(classify_ip(ip(text)), expected, "{text}");
        }
    }

    #[test]
    fn ipv6_forms_of_a_blocked_ipv4_address_are_blocked() {
        let cases = [
            ("::ffff:127.0.0.1", Blocked::Loopback),
            ("::ffff:7f00:1", Blocked::Loopback),
            ("::ffff:169.254.169.254", Blocked::LinkLocal),
            ("::ffff:10.0.0.1", Blocked::Private),
            ("::127.0.0.1", Blocked::Loopback),
            ("::10.1.1.1", Blocked::Private),
            ("64:ff9b::127.0.0.1", Blocked::Loopback),
            ("64:ff9b::a9fe:a9fe", Blocked::LinkLocal),
            ("64:ff9b::192.168.0.1", Blocked::Private),
            ("2002:7f00:1::", Blocked::Loopback),
            ("2002:a9fe:a9fe::1", Blocked::LinkLocal),
        ];
        for (text, expected) in cases {
            assert_eq!(classify_ip(ip(text)), Some(expected), "{text}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for text in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::",
        ] {
            assert_eq!(classify_ip(ip(text)), None, "{text}");
        }
        // An IPv4-compatible form of a public address is deprecated and unroutable.
        assert_eq!(classify_ip(ip("::8.8.8.8")), Some(Blocked::Reserved));
    }

    #[test]
    fn the_allowlist_parses_addresses_ranges_and_names() {
        let policy: OutboundPolicy =
            " 127.0.0.1, 10.0.0.0/8 ,internal.example.com,[::1],fd00::/8,*.corp.example.com,,"
                .parse()
                .unwrap();
        assert_eq!(
            policy.to_string(),
            "127.0.0.1,10.0.0.0/8,internal.example.com,::1,fd00::/8,*.corp.example.com"
        );
        assert_eq!(
            policy.to_string().parse::<OutboundPolicy>().unwrap(),
            policy
        );
        assert!("".parse::<OutboundPolicy>().unwrap().is_empty());
        assert!(policy.opens_host("internal.example.com"));
        assert!(policy.opens_host("Internal.Example.com."));
        assert!(!policy.opens_host("other.example.com"));
        assert!(policy.opens_host("a.b.corp.example.com"));
        assert!(policy.opens_host("corp.example.com"));
        assert!(!policy.opens_host("xcorp.example.com"));
    }

    #[test]
    fn allowlist_parse_errors_name_the_entry() {
        let cases = [
            (
                "10.0.0.0/33",
                "the prefix length must be a number from 0 to 32",
            ),
            (
                "fd00::/129",
                "the prefix length must be a number from 0 to 128",
            ),
            (
                "10.0.0.0/x",
                "the prefix length must be a number from 0 to 32",
            ),
            ("10.0.0.300/8", "the part before `/` is not an IP address"),
            (
                "10.1.0.0/8",
                "the address has bits set past the prefix length (write the range's first address)",
            ),
            (
                "https://example.com",
                "give a host name, an IP address or a CIDR range, not a URL",
            ),
            (
                "exa mple.com",
                "not a host name, an IP address or a CIDR range",
            ),
            ("a..b", "not a host name, an IP address or a CIDR range"),
            ("10.0.0.300", "not a valid IP address"),
        ];
        for (text, problem) in cases {
            let e = format!("127.0.0.1,{text}")
                .parse::<OutboundPolicy>()
                .unwrap_err();
            assert_eq!(e.entry, text);
            assert_eq!(e.problem, problem, "{text}");
            assert_eq!(
                e.to_string(),
                format!("outbound allowlist entry `{text}`: {problem}")
            );
        }
    }

    #[test]
    fn the_allowlist_opens_exactly_what_it_lists() {
        let policy: OutboundPolicy = "127.0.0.1,10.0.0.0/8,fd00::/8".parse().unwrap();
        assert!(policy.check_ip(ip("127.0.0.1")).is_ok());
        assert!(policy.check_ip(ip("::ffff:127.0.0.1")).is_ok());
        assert_eq!(policy.check_ip(ip("127.0.0.2")), Err(Blocked::Loopback));
        assert_eq!(policy.check_ip(ip("::1")), Err(Blocked::Loopback));
        assert!(policy.check_ip(ip("10.255.0.1")).is_ok());
        assert_eq!(policy.check_ip(ip("11.0.0.1")), Ok(()));
        assert_eq!(policy.check_ip(ip("192.168.0.1")), Err(Blocked::Private));
        assert!(policy.check_ip(ip("fd12::1")).is_ok());
        assert_eq!(policy.check_ip(ip("fc00::1")), Err(Blocked::UniqueLocal));
        assert_eq!(
            policy.check_ip(ip("169.254.169.254")),
            Err(Blocked::LinkLocal)
        );
        let everything: OutboundPolicy = "0.0.0.0/0".parse().unwrap();
        assert!(everything.check_ip(ip("169.254.169.254")).is_ok());
        assert_eq!(everything.check_ip(ip("::1")), Err(Blocked::Loopback));
    }

    #[test]
    fn development_opens_loopback_and_private_ranges_but_not_link_local() {
        let dev = OutboundPolicy::local_development();
        for open in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "fd00::1",
        ] {
            assert!(dev.check_ip(ip(open)).is_ok(), "{open}");
        }
        for shut in ["169.254.169.254", "100.64.0.1", "fe80::1"] {
            assert!(dev.check_ip(ip(shut)).is_err(), "{shut}");
        }
        assert!(dev.check_name("metadata.google.internal").is_err());
    }

    #[test]
    fn urls_are_checked_for_scheme_literal_and_metadata_name() {
        let policy = OutboundPolicy::default();
        let check = |u: &str| policy.check_url(&Url::parse(u).unwrap());
        for blocked in [
            "http://127.0.0.1/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0/",
            "http://169.254.169.254/latest/meta-data/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
            "http://metadata/",
            "http://instance-data/",
            "http://10.0.0.1/",
            "http://100.64.0.1/",
            "http://[fd00::1]/",
            "http://[64:ff9b::7f00:1]/",
        ] {
            assert!(check(blocked).is_err(), "{blocked}");
        }
        assert_eq!(
            check("ftp://example.com/").unwrap_err().reason,
            Reason::Scheme
        );
        assert!(check("file:///etc/passwd").is_err());
        // Names other than metadata ones are checked when they are resolved.
        assert!(check("https://api.example.com/v1").is_ok());
        assert!(check("http://localhost:1/").is_ok());
        assert!(check("https://93.184.215.14/").is_ok());
    }

    #[test]
    fn a_metadata_name_opens_only_by_name() {
        let by_name: OutboundPolicy = "metadata.google.internal".parse().unwrap();
        assert!(by_name.check_name("metadata.google.internal").is_ok());
        assert!(by_name.check_name("metadata").is_err());
        let by_address: OutboundPolicy = "169.254.169.254".parse().unwrap();
        assert!(by_address.check_name("metadata.google.internal").is_err());
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let policy = OutboundPolicy::default();
        let sock = |s: &str| SocketAddr::new(ip(s), 0);
        let kept = policy
            .filter_resolved("rebind.example", [sock("127.0.0.1"), sock("93.184.215.14")])
            .unwrap();
        assert_eq!(kept, vec![sock("93.184.215.14")]);
        let refused = policy
            .filter_resolved("localhost", [sock("127.0.0.1"), sock("::1")])
            .unwrap_err();
        assert_eq!(refused.address, Some(ip("127.0.0.1")));
        assert_eq!(
            refused.to_string(),
            "refused to call localhost: it resolves to 127.0.0.1, a loopback address, which the \
             outbound policy blocks; no connection was made. `--allow-outbound localhost` \
             (SWITCHYARD_ALLOW_OUTBOUND) opens it"
        );
        let named: OutboundPolicy = "internal.example.com".parse().unwrap();
        assert_eq!(
            named
                .filter_resolved("internal.example.com", [sock("10.0.0.5")])
                .unwrap(),
            vec![sock("10.0.0.5")]
        );
    }

    #[test]
    fn a_refused_literal_names_the_address_and_the_flag() {
        let e = OutboundPolicy::default()
            .check_url(&Url::parse("http://169.254.169.254/").unwrap())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused to call 169.254.169.254: a link-local address, which the outbound policy \
             blocks; no connection was made. `--allow-outbound 169.254.169.254` \
             (SWITCHYARD_ALLOW_OUTBOUND) opens it"
        );
    }

    #[test]
    fn the_policy_reads_from_a_json_string() {
        let policy: OutboundPolicy =
            serde_json::from_value(serde_json::json!("10.0.0.0/8")).unwrap();
        assert_eq!(
            serde_json::to_value(&policy).unwrap(),
            serde_json::json!("10.0.0.0/8")
        );
        let e =
            serde_json::from_value::<OutboundPolicy>(serde_json::json!("10.0.0.0/99")).unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/99"), "{e}");
    }
}
