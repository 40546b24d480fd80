use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet MAC address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// True for a unicast address (the group bit of the first octet is clear).
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Why a MAC address string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets like 0a:58:0a:f0:00:02")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for slot in out.iter_mut() {
            let part = parts.next().ok_or_else(|| MacParseError(s.to_string()))?;
            if part.len() != 2 {
                return Err(MacParseError(s.to_string()));
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_string()));
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The anycast gateway MAC of a segment: the same on every node, derived from the VNI so that
/// no coordination is needed. Locally administered (`0a:5e:…`).
pub fn gateway_mac(vni: u32) -> MacAddr {
    let v = vni.to_be_bytes();
    MacAddr([0x0a, 0x5e, 0x00, v[1], v[2], v[3]])
}

/// The MAC of an endpoint interface, derived from its address (`0a:58:` + the IPv4 octets, as
/// OVN-Kubernetes does). Addresses are unique within Seam, so MACs are too, and an endpoint that
/// moves or is re-created keeps its MAC without another lookup.
pub fn endpoint_mac(ip: Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x0a, 0x58, o[0], o[1], o[2], o[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_text() {
        let mac = endpoint_mac(Ipv4Addr::new(10, 240, 0, 2));
        assert_eq!(mac.to_string(), "0a:58:0a:f0:00:02");
        assert_eq!("0a:58:0a:f0:00:02".parse::<MacAddr>(), Ok(mac));
        assert!(mac.is_unicast());
    }

    #[test]
    fn malformed_macs_are_rejected() {
        for bad in [
            "",
            "0a:58",
            "0a:58:0a:f0:00:02:03",
            "zz:58:0a:f0:00:02",
            "0a:580:a:f0:00:02",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn gateway_mac_differs_per_vni_and_is_unicast() {
        assert_ne!(gateway_mac(100), gateway_mac(101));
        assert!(gateway_mac(0xffffff).is_unicast());
    }
}
