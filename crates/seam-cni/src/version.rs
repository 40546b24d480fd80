//! The CNI spec versions seam-cni speaks.

use std::fmt;

/// A supported `cniVersion`. Ordered by release, so `v >= CniVersion::V0_4_0` reads as the spec does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CniVersion {
    /// 0.3.0: results with `interfaces`, `ips` (with `version`) and `routes`.
    V0_3_0,
    /// 0.3.1: as 0.3.0.
    V0_3_1,
    /// 0.4.0: adds CHECK and `prevResult` on DEL.
    V0_4_0,
    /// 1.0.0: drops `version` from `ips`.
    V1_0_0,
    /// 1.1.0: adds GC, STATUS and interface `mtu`.
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, oldest first (the order VERSION prints them in).
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest version, used when the config names none this plug-in can answer in.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The version as the spec writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parses a supported version; `None` for anything else.
    pub fn parse(s: &str) -> Option<CniVersion> {
        CniVersion::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The supported versions as one comma-separated string, for error messages.
    pub fn supported_list() -> String {
        CniVersion::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
