//! What the controller is told at start: how segments are mapped and where addresses come from,
//! and where it listens.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use seam_model::MAX_VNI;

use crate::error::ConfigError;

/// How namespaces map to segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SegmentMode {
    /// One segment per namespace (NSX style): `ns-<namespace>`, carved from the pool on first use.
    #[default]
    PerNamespace,
    /// One segment, `cluster`, holding the whole pool, for every namespace.
    Flat,
}

impl FromStr for SegmentMode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "namespace" | "per-namespace" => Ok(SegmentMode::PerNamespace),
            "flat" => Ok(SegmentMode::Flat),
            other => Err(ConfigError::Invalid {
                field: "segment-mode",
                value: other.to_string(),
                expected: "namespace or flat",
            }),
        }
    }
}

impl fmt::Display for SegmentMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SegmentMode::PerNamespace => "namespace",
            SegmentMode::Flat => "flat",
        })
    }
}

/// The name and tenant of the flat mode's single segment.
pub const FLAT_SEGMENT: &str = "cluster";

/// The prefix of per-namespace segment names (`ns-<namespace>`).
pub const NAMESPACE_SEGMENT_PREFIX: &str = seam_model::NAMESPACE_SEGMENT_PREFIX;

/// How the controller maps namespaces to segments and allocates subnets, blocks and VNIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Per-namespace or flat segments.
    pub segment_mode: SegmentMode,
    /// The pool segment subnets are carved from (flat mode: the one segment's subnet).
    pub pool: Ipv4Net,
    /// Prefix length of per-namespace segments.
    pub segment_prefix: u8,
    /// Prefix length of per-node address blocks in segments the controller creates.
    pub block_prefix: u8,
    /// Lowest VNI handed to segments the controller creates.
    pub vni_base: u32,
    /// The range Services' ClusterIPs come from (`--service-cidr`).
    pub service_cidr: Ipv4Net,
    /// The ports NodePort and LoadBalancer Services' `nodePort`s come from
    /// (`--node-port-range`).
    pub node_port_range: PortRange,
}

/// The default `--service-cidr`, as Kubernetes' kubeadm default.
pub const DEFAULT_SERVICE_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 96, 0, 0), 12);

/// An inclusive range of ports (`30000-32767`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// The lowest port of the range.
    pub first: u16,
    /// The highest port of the range.
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is inside the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl Default for PortRange {
    fn default() -> Self {
        let (first, last) = seam_model::DEFAULT_NODE_PORT_RANGE;
        PortRange { first, last }
    }
}

impl FromStr for PortRange {
    type Err = ConfigError;
    /// Parses `FIRST-LAST` (both 1..=65535, FIRST <= LAST).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::Invalid {
            field: "node-port-range",
            value: s.to_string(),
            expected: "FIRST-LAST, two ports in 1..=65535 with FIRST <= LAST",
        };
        let (first, last) = s.split_once('-').ok_or_else(bad)?;
        let first: u16 = first.trim().parse().map_err(|_| bad())?;
        let last: u16 = last.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            segment_mode: SegmentMode::PerNamespace,
            pool: Ipv4Net::new_assert(Ipv4Addr::new(10, 240, 0, 0), 12),
            segment_prefix: 20,
            block_prefix: 26,
            vni_base: 4096,
            service_cidr: DEFAULT_SERVICE_CIDR,
            node_port_range: PortRange::default(),
        }
    }
}

impl ControllerConfig {
    /// Checks that the pool, prefixes and VNI base fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let pool = self.pool;
        if pool != pool.trunc() {
            return Err(ConfigError::Invalid {
                field: "pool",
                value: pool.to_string(),
                expected: "a network address without host bits set",
            });
        }
        // The segment size only matters in per-namespace mode; in flat mode the pool is the
        // segment.
        let segment_len = match self.segment_mode {
            SegmentMode::PerNamespace => self.segment_prefix,
            SegmentMode::Flat => pool.prefix_len(),
        };
        if self.segment_mode == SegmentMode::PerNamespace
            && (self.segment_prefix < pool.prefix_len() || self.segment_prefix > 30)
        {
            return Err(ConfigError::Invalid {
                field: "segment-prefix",
                value: self.segment_prefix.to_string(),
                expected: "a prefix length between the pool's and 30",
            });
        }
        if segment_len > 30 {
            return Err(ConfigError::Invalid {
                field: "pool",
                value: pool.to_string(),
                expected: "at least a /30",
            });
        }
        if self.block_prefix < segment_len || self.block_prefix > 30 {
            return Err(ConfigError::Invalid {
                field: "block-prefix",
                value: self.block_prefix.to_string(),
                expected: "a prefix length between the segments' and 30",
            });
        }
        if self.vni_base == 0 || self.vni_base > MAX_VNI {
            return Err(ConfigError::Invalid {
                field: "vni-base",
                value: self.vni_base.to_string(),
                expected: "a VNI in 1..=16777215",
            });
        }
        let services = self.service_cidr;
        if services != services.trunc() || services.prefix_len() > 30 {
            return Err(ConfigError::Invalid {
                field: "service-cidr",
                value: services.to_string(),
                expected: "a network address without host bits set, at least a /30",
            });
        }
        // A ClusterIP inside the pool would shadow a pod's or VM's address.
        if seam_model::overlaps(services, pool) {
            return Err(ConfigError::Invalid {
                field: "service-cidr",
                value: services.to_string(),
                expected: "a range outside the pool segments are carved from",
            });
        }
        let ports = self.node_port_range;
        if ports.first == 0 || ports.first > ports.last {
            return Err(ConfigError::Invalid {
                field: "node-port-range",
                value: ports.to_string(),
                expected: "FIRST-LAST, two ports in 1..=65535 with FIRST <= LAST",
            });
        }
        Ok(())
    }
}

/// Where the controller accepts connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listener {
    /// A Unix stream socket (created with mode 0600; a stale socket file is replaced).
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl FromStr for Listener {
    type Err = ConfigError;
    /// Parses `unix:/path` or `tcp:ADDR:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::Invalid {
            field: "listen",
            value: s.to_string(),
            expected: "unix:/absolute/path or tcp:ADDR:PORT",
        };
        if let Some(path) = s.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(bad());
            }
            return Ok(Listener::Unix(path));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            return addr.parse().map(Listener::Tcp).map_err(|_| bad());
        }
        Err(bad())
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listener::Unix(path) => write!(f, "unix:{}", path.display()),
            Listener::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

/// How the controller's TCP listeners are served (Unix sockets are always plain, mode 0600,
/// for root on the machine).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TcpSecurity {
    /// No TCP listener may be served: one is a start-up error. The default, so plain TCP is
    /// never served by accident.
    #[default]
    Refuse,
    /// Mutual TLS 1.3 (`--tls-cert`, `--tls-key`, `--ca`).
    Tls(TlsFiles),
    /// Plain HTTP, every caller an administrator (`--insecure-plain-tcp`): for loopback labs and
    /// the TLS-vs-plain benchmark only.
    InsecurePlain,
}

/// The files of the controller's TLS listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The serving certificate (PEM, chain), re-read every 5 s.
    pub cert: PathBuf,
    /// Its private key (PEM), re-read with it.
    pub key: PathBuf,
    /// The CA certificate that verifies client certificates (PEM).
    pub ca: PathBuf,
}

/// Connection limits that keep one misbehaving client from starving the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open TCP connections at most (also kept below the open-files limit); more are closed at
    /// once. Unix-socket connections do not count.
    pub max_connections: usize,
    /// A TLS handshake that takes longer is cut.
    pub handshake_timeout: Duration,
    /// A request whose header takes longer to arrive is cut (slowloris). hyper starts this
    /// timer when it waits for the next request, so it is also the keep-alive idle timeout.
    pub header_read_timeout: Duration,
}

/// `--max-connections` default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// How [`crate::serve_controller_with`] serves its listeners.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServeOptions {
    /// TLS, plain or refused, for TCP listeners.
    pub tcp: TcpSecurity,
    /// Connection and timeout limits.
    pub limits: ConnectionLimits,
}

/// `--node-cert-validity-secs` default: 7 days.
pub const DEFAULT_NODE_CERT_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the controller signs nodes' certificates with at join and renewal (`--ca`, `--ca-key`,
/// `--node-cert-validity-secs`). Without it, join and renew answer 503 `SigningUnavailable`.
#[derive(Debug, Clone)]
pub struct Signing {
    /// The CA (certificate and key).
    pub ca: Arc<seam_pki::Ca>,
    /// How long a node certificate is valid.
    pub node_cert_validity: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(ControllerConfig::default().validate(), Ok(()));
        let flat = ControllerConfig {
            segment_mode: SegmentMode::Flat,
            ..ControllerConfig::default()
        };
        assert_eq!(flat.validate(), Ok(()));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let base = ControllerConfig::default();
        let cases = [
            (
                ControllerConfig {
                    pool: "10.240.0.1/12".parse().unwrap(),
                    ..base.clone()
                },
                "pool",
            ),
            (
                ControllerConfig {
                    segment_prefix: 8,
                    ..base.clone()
                },
                "segment-prefix",
            ),
            (
                ControllerConfig {
                    block_prefix: 19,
                    ..base.clone()
                },
                "block-prefix",
            ),
            (
                ControllerConfig {
                    vni_base: 0,
                    ..base.clone()
                },
                "vni-base",
            ),
            (
                ControllerConfig {
                    service_cidr: "10.240.0.0/16".parse().unwrap(),
                    ..base.clone()
                },
                "service-cidr",
            ),
            (
                ControllerConfig {
                    service_cidr: "10.96.0.1/12".parse().unwrap(),
                    ..base.clone()
                },
                "service-cidr",
            ),
            (
                ControllerConfig {
                    node_port_range: PortRange { first: 9, last: 8 },
                    ..base.clone()
                },
                "node-port-range",
            ),
        ];
        for (config, field) in cases {
            match config.validate() {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn listeners_parse() {
        assert_eq!(
            "unix:/run/seam/c.sock".parse::<Listener>().unwrap(),
            Listener::Unix("/run/seam/c.sock".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:7070".parse::<Listener>().unwrap(),
            Listener::Tcp("127.0.0.1:7070".parse().unwrap())
        );
        for bad in ["", "unix:relative", "tcp:nope", "http://x:1"] {
            assert!(bad.parse::<Listener>().is_err(), "{bad}");
        }
    }

    #[test]
    fn port_ranges_parse() {
        assert_eq!(
            "30000-32767".parse::<PortRange>().unwrap(),
            PortRange::default()
        );
        assert_eq!(
            "80-80".parse::<PortRange>().unwrap(),
            PortRange {
                first: 80,
                last: 80
            }
        );
        for bad in ["", "30000", "0-10", "10-9", "1-65536", "a-b"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn segment_modes_parse() {
        assert_eq!("flat".parse::<SegmentMode>().unwrap(), SegmentMode::Flat);
        assert_eq!(
            "namespace".parse::<SegmentMode>().unwrap(),
            SegmentMode::PerNamespace
        );
        assert!("nsx".parse::<SegmentMode>().is_err());
    }
}
