//! IPv4 prefixes compared: the one place the address plan's checks (segments, pools, the
//! service range, reserved ranges) ask whether two prefixes meet.

use ipnet::Ipv4Net;

/// Whether two prefixes share an address (one holds the other's network address).
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_overlap_when_one_holds_the_other() {
        assert!(overlaps(net("10.0.0.0/8"), net("10.1.0.0/16")));
        assert!(overlaps(net("10.1.0.0/16"), net("10.0.0.0/8")));
        assert!(overlaps(net("10.1.0.0/16"), net("10.1.0.0/16")));
        assert!(!overlaps(net("10.1.0.0/16"), net("10.2.0.0/16")));
        assert!(!overlaps(net("192.0.2.0/25"), net("192.0.2.128/25")));
    }
}
