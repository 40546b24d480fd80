//! FNV-1a (64 bits): the one stable hash of the workspace. It is written out because std's
//! hasher is not stable across releases, and what is made of it must survive an upgrade and
//! agree across machines: nftables names an agent adopts after a restart, interface names,
//! the allocation start of a Service, the gateway that serves a LoadBalancer address.

/// The FNV-1a offset basis: the hash of nothing.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, continuing from `hash`.
pub fn fnv_feed(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// FNV-1a of `text`.
pub fn fnv1a(text: &str) -> u64 {
    fnv_feed(FNV_OFFSET, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_test_vectors() {
        // From the FNV reference test suite (64-bit FNV-1a).
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }
}
