//! Pure allocation: the lowest free aligned subnet of a range, the lowest unused VNI.
//!
//! Architecture invariant: no I/O here; the caller reads what is taken and writes the result
//! with a compare-and-swap.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;

/// The lowest subnet of length `prefix` inside `within` that overlaps none of `taken`.
/// `None` when `prefix` is shorter than `within`'s or nothing is free.
pub fn lowest_free_subnet(within: Ipv4Net, prefix: u8, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    if prefix < within.prefix_len() || prefix > 32 {
        return None;
    }
    let size: u64 = 1u64 << (32 - u32::from(prefix));
    let end = u64::from(u32::from(within.broadcast()));
    let mut ranges: Vec<(u64, u64)> = taken
        .iter()
        .map(|n| {
            (
                u64::from(u32::from(n.network())),
                u64::from(u32::from(n.broadcast())),
            )
        })
        .filter(|&(s, e)| e >= u64::from(u32::from(within.network())) && s <= end)
        .collect();
    ranges.sort_unstable();
    let mut cursor = u64::from(u32::from(within.network()));
    let mut i = 0;
    loop {
        let last = cursor + size - 1;
        if last > end {
            return None;
        }
        // Skip ranges entirely below the candidate.
        while i < ranges.len() && ranges[i].1 < cursor {
            i += 1;
        }
        // Ranges are sorted by start; any overlap starts at or before `last`.
        let overlap_end = ranges[i..]
            .iter()
            .take_while(|r| r.0 <= last)
            .map(|r| r.1)
            .max();
        match overlap_end {
            None => {
                let addr = u32::try_from(cursor).ok()?;
                return Ipv4Net::new(addr.into(), prefix).ok();
            }
            Some(e) => cursor = (e + 1).div_ceil(size) * size,
        }
    }
}

/// The lowest VNI `>= base` and `<= max` not in `used`.
pub fn lowest_free_vni(base: u32, max: u32, used: &BTreeSet<u32>) -> Option<u32> {
    (base..=max).find(|v| !used.contains(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn picks_lowest_gap() {
        let pool = net("10.240.0.0/12");
        assert_eq!(
            lowest_free_subnet(pool, 20, &[]),
            Some(net("10.240.0.0/20"))
        );
        assert_eq!(
            lowest_free_subnet(pool, 20, &[net("10.240.0.0/20"), net("10.240.32.0/20")]),
            Some(net("10.240.16.0/20"))
        );
        // A smaller taken range still blocks the whole candidate.
        assert_eq!(
            lowest_free_subnet(pool, 20, &[net("10.240.8.0/24")]),
            Some(net("10.240.16.0/20"))
        );
        // A larger taken range outside the pool's start.
        assert_eq!(lowest_free_subnet(pool, 20, &[net("10.0.0.0/8")]), None);
        assert_eq!(
            lowest_free_subnet(net("10.0.0.0/30"), 30, &[net("10.0.0.0/30")]),
            None
        );
        assert_eq!(lowest_free_subnet(net("10.0.0.0/24"), 23, &[]), None);
        assert_eq!(
            lowest_free_subnet(net("255.255.255.0/24"), 26, &[net("255.255.255.0/25")]),
            Some(net("255.255.255.128/26"))
        );
        assert_eq!(
            lowest_free_subnet(net("255.255.255.0/24"), 26, &[net("255.255.255.0/24")]),
            None
        );
    }

    #[test]
    fn vnis() {
        let used: BTreeSet<u32> = [4096, 4097, 4099].into_iter().collect();
        assert_eq!(lowest_free_vni(4096, 5000, &used), Some(4098));
        assert_eq!(lowest_free_vni(4096, 4097, &used), None);
    }

    proptest! {
        #[test]
        fn result_is_inside_free_aligned_and_lowest(
            taken in proptest::collection::vec((0u32..256, 24u8..=30), 0..12),
            prefix in 24u8..=30,
        ) {
            let within = net("10.0.0.0/24");
            let taken: Vec<Ipv4Net> = taken
                .into_iter()
                .map(|(off, p)| Ipv4Net::new((0x0a00_0000u32 + off).into(), p).unwrap().trunc())
                .collect();
            let overlaps = |a: &Ipv4Net| taken.iter().any(|t| seam_model::overlaps(*t, *a));
            let got = lowest_free_subnet(within, prefix, &taken);
            let brute = within.subnets(prefix).unwrap().find(|c| !overlaps(c));
            prop_assert_eq!(got, brute);
        }
    }
}
