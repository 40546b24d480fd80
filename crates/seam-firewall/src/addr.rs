//! IPv4 address sets as sorted, disjoint, inclusive intervals: what an nftables `flags interval` set holds.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

/// A set of IPv4 addresses (single addresses, CIDRs, CIDRs minus exceptions), kept as sorted, disjoint,
/// non-adjacent inclusive ranges, so equal sets have equal representations and render identically.
/// The ranges are shared between clones and never changed in place: the renderer keeps a clone of
/// each set it rendered, and telling an unchanged set (the compiler's own, a pointer compare) from
/// a changed one must not cost a walk of hundreds of thousands of ranges per change.
#[derive(Debug, Clone, Default, Eq)]
pub struct AddrSet {
    ranges: Arc<[(u32, u32)]>,
}

impl PartialEq for AddrSet {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ranges, &other.ranges) || self.ranges == other.ranges
    }
}

impl Hash for AddrSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.ranges.hash(state);
    }
}

impl AddrSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding `addrs`.
    pub fn from_addrs(addrs: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        // One sort for the whole batch: inserting one by one re-normalizes every time, which
        // made building a set of n members O(n² log n) (the compiler's hot spot at 10k pods).
        normalized(
            addrs
                .into_iter()
                .map(|a| (u32::from(a), u32::from(a)))
                .collect(),
        )
    }

    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Adds one address.
    pub fn insert_addr(&mut self, addr: Ipv4Addr) {
        let a = u32::from(addr);
        self.insert_range(a, a);
    }

    /// Adds every address of `net`.
    pub fn insert_net(&mut self, net: Ipv4Net) {
        self.insert_range(u32::from(net.network()), u32::from(net.broadcast()));
    }

    /// Adds the inclusive range `start..=end` (nothing when `end < start`).
    pub fn insert_range(&mut self, start: u32, end: u32) {
        if end < start {
            return;
        }
        let mut ranges = self.ranges.to_vec();
        ranges.push((start, end));
        *self = normalized(ranges);
    }

    /// Removes every address of `net`.
    pub fn remove_net(&mut self, net: Ipv4Net) {
        let (lo, hi) = (u32::from(net.network()), u32::from(net.broadcast()));
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(s, e) in self.ranges.iter() {
            if e < lo || s > hi {
                out.push((s, e));
                continue;
            }
            if s < lo {
                out.push((s, lo - 1));
            }
            if e > hi {
                out.push((hi + 1, e));
            }
        }
        self.ranges = out.into();
    }

    /// Adds every address of `other`.
    pub fn extend(&mut self, other: &AddrSet) {
        if other.ranges.is_empty() {
            return;
        }
        let mut ranges = self.ranges.to_vec();
        ranges.extend_from_slice(&other.ranges);
        *self = normalized(ranges);
    }

    /// The addresses in both sets.
    pub fn intersection(&self, other: &AddrSet) -> AddrSet {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while let (Some(&(a0, a1)), Some(&(b0, b1))) = (self.ranges.get(i), other.ranges.get(j)) {
            let (lo, hi) = (a0.max(b0), a1.min(b1));
            if lo <= hi {
                out.push((lo, hi));
            }
            if a1 < b1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        normalized(out)
    }

    /// Whether `addr` is in the set.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        let i = self.ranges.partition_point(|&(_, e)| e < a);
        self.ranges.get(i).is_some_and(|&(s, _)| s <= a)
    }

    /// How many disjoint ranges the set holds.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The inclusive ranges, sorted.
    pub fn ranges(&self) -> impl Iterator<Item = (Ipv4Addr, Ipv4Addr)> + '_ {
        self.ranges
            .iter()
            .map(|&(s, e)| (Ipv4Addr::from(s), Ipv4Addr::from(e)))
    }

    /// The elements as nftables writes them: `a.b.c.d`, `a.b.c.d/n` when a range is exactly one CIDR, else
    /// `a.b.c.d-e.f.g.h`.
    pub fn elements(&self) -> Vec<String> {
        self.ranges
            .iter()
            .map(|&(s, e)| {
                if s == e {
                    return Ipv4Addr::from(s).to_string();
                }
                let size = u64::from(e) - u64::from(s) + 1;
                if size.is_power_of_two() && u64::from(s) % size == 0 {
                    let len = 32 - size.trailing_zeros();
                    return format!("{}/{len}", Ipv4Addr::from(s));
                }
                format!("{}-{}", Ipv4Addr::from(s), Ipv4Addr::from(e))
            })
            .collect()
    }
}

/// The set of these ranges (in any order, overlapping or not).
fn normalized(mut ranges: Vec<(u32, u32)>) -> AddrSet {
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if u64::from(s) <= u64::from(last.1) + 1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    AddrSet { ranges: out.into() }
}

impl fmt::Display for AddrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{ {} }}", self.elements().join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap_or_else(|_| Ipv4Net::default())
    }

    #[test]
    fn merges_and_renders() {
        let mut s = AddrSet::new();
        s.insert_net(net("10.0.0.0/25"));
        s.insert_net(net("10.0.0.128/25"));
        s.insert_addr(Ipv4Addr::new(10, 0, 2, 1));
        s.insert_addr(Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(s.elements(), ["10.0.0.0/24", "10.0.2.1-10.0.2.2"]);
        assert!(s.contains(Ipv4Addr::new(10, 0, 0, 77)));
        assert!(!s.contains(Ipv4Addr::new(10, 0, 1, 0)));
    }

    #[test]
    fn except_and_intersection() {
        let mut s = AddrSet::new();
        s.insert_net(net("10.0.0.0/8"));
        s.remove_net(net("10.1.0.0/16"));
        assert!(!s.contains(Ipv4Addr::new(10, 1, 2, 3)));
        assert!(s.contains(Ipv4Addr::new(10, 2, 0, 0)));
        let other = AddrSet::from_addrs([Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 3, 0, 1)]);
        assert_eq!(s.intersection(&other).elements(), ["10.3.0.1"]);
        let mut all = AddrSet::new();
        all.insert_net(net("0.0.0.0/0"));
        assert_eq!(all.elements(), ["0.0.0.0/0"]);
    }
}
