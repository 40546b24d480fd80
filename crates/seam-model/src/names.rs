//! The names Seam derives from Kubernetes and CNI identities: a pod's endpoint name and a
//! namespace's segment name.
//!
//! Every input Kubernetes or a CNI runtime accepts must map to a valid name, distinct inputs to
//! distinct names, and one input always to the same name (agents recompute names after a
//! restart, the Kubernetes adapter relabels endpoints by `<namespace>/<pod>`). Kubernetes'
//! bounds: a namespace is a DNS-1123 label (at most 63), a pod name a DNS-1123 subdomain (at most
//! 253); a container id has no bound (CNI: `[A-Za-z0-9_.-]`), an interface name at most 15.

use std::borrow::Cow;

/// Longest namespace name (a DNS-1123 label).
pub const MAX_NAMESPACE_NAME: usize = 63;

/// Longest pod name (a DNS-1123 subdomain).
pub const MAX_POD_NAME: usize = 253;

/// Longest interface name (Linux IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Longest endpoint name: `<namespace>/<pod>/<ifname>` with each part at its longest. Pod
/// endpoints keep their Kubernetes names whole, so the bound is what those names need.
pub const MAX_ENDPOINT_NAME: usize = MAX_NAMESPACE_NAME + 1 + MAX_POD_NAME + 1 + MAX_IFNAME;

/// Longest segment name: a DNS-1123 subdomain's length, so `ns-<namespace>` fits for any
/// namespace and stays one-to-one with it.
pub const MAX_SEGMENT_NAME: usize = 253;

/// The prefix of per-namespace segment names (`ns-<namespace>`).
pub const NAMESPACE_SEGMENT_PREFIX: &str = "ns-";

/// Container ids up to this length appear whole in an endpoint name (runtimes use 64 hex
/// digits); longer ones are shortened by [`pod_endpoint_name`].
pub const MAX_WHOLE_CONTAINER_ID: usize = 128;

/// How many leading characters of a long container id its shortened form keeps, so a person
/// can still find the container.
const CONTAINER_ID_PREFIX: usize = 64;

/// Separates a long container id's prefix from its hash. A container id never holds `~`
/// (CNI allows `[A-Za-z0-9_.-]`), so a shortened id never equals a whole one.
const HASH_MARK: char = '~';

/// The segment that serves `namespace` in per-namespace mode: `ns-<namespace>`.
pub fn namespace_segment_name(namespace: &str) -> String {
    format!("{NAMESPACE_SEGMENT_PREFIX}{namespace}")
}

/// The endpoint name of a pod's interface: `<namespace>/<pod>` for `eth0`,
/// `<namespace>/<pod>/<ifname>` for other interfaces, and without a pod name (a runtime that
/// is not Kubernetes) `<namespace>/<container id>/<ifname>`, the container id shortened to
/// its first 64 characters, `~` and 32 hex digits of its 128-bit FNV-1a hash when it is longer
/// than [`MAX_WHOLE_CONTAINER_ID`] (the full id stays in the endpoint's `containerId`).
///
/// Two long ids with the same first 64 characters map to one name only if their 128-bit hashes
/// collide: by accident, about 2^-64 for 2^32 ids. FNV is not built to resist chosen
/// collisions, but container ids are chosen by the runtime, not by the users it serves.
///
/// The two forms meet in one case, kept for compatibility with the names agents have
/// published: a pod's secondary interface (`<ns>/<pod>/net1`) and a container without a pod
/// name whose id equals that pod's name, on the same interface. Kubernetes always passes the
/// pod name, so it takes a Kubernetes pod and a container of another runtime on one network
/// and namespace, named alike.
pub fn pod_endpoint_name(
    namespace: &str,
    pod_name: Option<&str>,
    container_id: &str,
    ifname: &str,
) -> String {
    match pod_name {
        Some(pod) if ifname == "eth0" => format!("{namespace}/{pod}"),
        Some(pod) => format!("{namespace}/{pod}/{ifname}"),
        None => format!("{namespace}/{}/{ifname}", short_container_id(container_id)),
    }
}

fn short_container_id(id: &str) -> Cow<'_, str> {
    if id.len() <= MAX_WHOLE_CONTAINER_ID {
        return Cow::Borrowed(id);
    }
    let prefix: String = id.chars().take(CONTAINER_ID_PREFIX).collect();
    Cow::Owned(format!(
        "{prefix}{HASH_MARK}{:032x}",
        fnv1a_128(id.as_bytes())
    ))
}

/// 128-bit FNV-1a, written out because it must give the same name in every release (std's
/// hashers promise no stability) and the workspace has no digest crate.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes.iter().fold(OFFSET, |hash, b| {
        (hash ^ u128::from(*b)).wrapping_mul(PRIME)
    })
}

/// True when `name` is 1..=`max` characters of `a-z 0-9 - .`, starting and ending
/// alphanumeric.
pub(crate) fn is_dns_name(name: &str, max: usize) -> bool {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ok_ends = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    !name.is_empty() && name.len() <= max && ok_chars && ok_ends
}

/// True when `name` is a valid segment name: like [`crate::is_valid_name`], but up to
/// [`MAX_SEGMENT_NAME`] characters.
pub fn is_valid_segment_name(name: &str) -> bool {
    is_dns_name(name, MAX_SEGMENT_NAME)
}

/// True when `name` can name an endpoint: 1..=[`MAX_ENDPOINT_NAME`] bytes, no space or
/// control character.
pub fn is_valid_endpoint_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ENDPOINT_NAME
        && !name.chars().any(|c| c.is_control() || c == ' ')
}

#[cfg(test)]
mod tests;
