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
