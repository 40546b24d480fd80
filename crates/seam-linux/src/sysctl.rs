//! Sysctls of the calling thread's network namespace (`/proc/sys/net` is per namespace).

use crate::error::{Error, Result};

/// Writes `value` to `/proc/sys/<key>` (`sysctl -w`), e.g. `net/ipv4/ip_forward`.
pub fn write(key: &str, value: &str) -> Result<()> {
    std::fs::write(format!("/proc/sys/{key}"), value).map_err(|source| Error::Sysctl {
        key: key.to_string(),
        source,
    })
}

/// Reads `/proc/sys/<key>`, trimmed (`sysctl -n`).
pub fn read(key: &str) -> Result<String> {
    std::fs::read_to_string(format!("/proc/sys/{key}"))
        .map(|v| v.trim().to_string())
        .map_err(|source| Error::Sysctl {
            key: key.to_string(),
            source,
        })
}

/// Whether reverse-path filtering on `ifname` is strict: the kernel applies the larger of `all`
/// and the interface's value, and 1 is the only strict one (0 is off, 2 loose). An unreadable
/// value counts as strict.
pub fn rp_filter_strict(ifname: &str) -> Result<bool> {
    let value = |key: String| -> Result<u8> { Ok(read(&key)?.parse().unwrap_or(1)) };
    let all = value("net/ipv4/conf/all/rp_filter".into())?;
    let own = value(format!("net/ipv4/conf/{ifname}/rp_filter"))?;
    Ok(all.max(own) == 1)
}

/// Loose reverse-path filtering (2) on `ifname` when it is strict; off (0) stays off, since
/// loose filtering drops sources the node has no route to at all (a client of a LoadBalancer
/// address on the internet, whose replies are routed by their connection's mark).
pub fn loosen_rp_filter(ifname: &str) -> Result<()> {
    if rp_filter_strict(ifname)? {
        write(&format!("net/ipv4/conf/{ifname}/rp_filter"), "2")?;
    }
    Ok(())
}
