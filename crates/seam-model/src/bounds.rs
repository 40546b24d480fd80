//! The size bounds of what the controller API accepts, each with its reason. The bounds of policy
//! objects (rules, peers, ports, selector terms, annotations, total size) live in seam-policy's
//! `bounds` module, which cannot depend on this crate; the two lists are the whole set.
//!
//! Why bounds at all: every agent holds every endpoint, namespace and policy of the cluster, so
//! one bloated object costs memory on every node (measured before these bounds: 40 endpoints of
//! 1.9 MB took the controller from 10 to 333 MB and made each agent download a 77 MB snapshot).
//! With them, an agent's memory grows with the number of objects, not with their contents.
//! Kubernetes lets etcd hold objects of up to 1.5 MiB; Seam's records are far smaller because
//! they are replicated to every node, not read by a few controllers.

use std::io;

use serde::Serialize;

use crate::error::Problems;

/// Longest label (and annotation) key prefix: a DNS subdomain (Kubernetes `IsQualifiedName`).
pub const MAX_LABEL_PREFIX_LEN: usize = 253;

/// Longest label key name (after the optional `prefix/`) and longest label value: one DNS label
/// (Kubernetes `IsQualifiedName`, `IsValidLabelValue`).
pub const MAX_LABEL_NAME_LEN: usize = 63;

/// Largest encoded JSON of one record with labels or other lists: an endpoint (pod, VM, external
/// address), a VM, an external endpoint request, a namespace. (Nodes, segments and tenants are
/// bounded by their fields alone: names of at most 63 characters, addresses and numbers; every
/// request body by [`MAX_BODY_BYTES`].) 16 KiB holds 40 labels of the
/// longest key and value Kubernetes allows (380 bytes each) plus [`MAX_ENDPOINT_PORTS`] named
/// ports; real pods carry a handful of labels (≈1 KiB). Every agent holds every endpoint, so this
/// bound times the number of endpoints is what a node may spend on them.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// Most named ports of one endpoint or VM. Kubernetes sets no count, but policies refer to them by
/// name and the network-policy-api bounds every list of ports in a rule to 100; a pod with more
/// named ports than a rule may list has no use for the rest.
pub const MAX_ENDPOINT_PORTS: usize = 100;

/// Most addresses of one external endpoint. Each address becomes an endpoint record every agent
/// holds; Kubernetes' EndpointSlice bounds an endpoint's `addresses` to 100 as well.
pub const MAX_EXTERNAL_ADDRESSES: usize = 100;

/// Most ports of one Service (and of one EndpointSlice, whose ports mirror its Service's).
/// Kubernetes sets no count for a Service; every node installs one frontend per port and
/// address, and real Services have a handful. 100 is the bound of [`MAX_ENDPOINT_PORTS`] too.
pub const MAX_SERVICE_PORTS: usize = 100;

/// Most `externalIPs` of one Service: each is one more frontend per port on every node.
pub const MAX_EXTERNAL_IPS: usize = 100;

/// Most endpoints of one EndpointSlice: Kubernetes' own bound (`maxEndpoints`; its controller
/// writes at most 100 per slice by default).
pub const MAX_SLICE_ENDPOINTS: usize = 1000;

/// Most addresses of one EndpointSlice endpoint: Kubernetes' own bound (only the first is used,
/// as kube-proxy does).
pub const MAX_SLICE_ADDRESSES: usize = 100;

/// Largest encoded JSON of one EndpointSlice. A slice of [`MAX_SLICE_ENDPOINTS`] endpoints with
/// their node names and `targetRef`s takes about 250 KiB; the bound keeps room for that and
/// keeps one slice well below [`MAX_BODY_BYTES`]. Every node holds every slice.
pub const MAX_SLICE_BYTES: usize = 512 * 1024;

/// Most prefixes of one address pool. Pools are few and hand-written; each prefix is checked
/// against every other one and every Service address.
pub const MAX_POOL_PREFIXES: usize = 100;

/// Largest HTTP request body the controller reads (the largest object is a 256 KiB policy; an
/// apply of several objects must fit too). 1 MiB keeps one request, and so one `POST /v1/apply`
/// transaction, below etcd's default request limit of 1.5 MiB (`--max-request-bytes`), the same
/// reason Kubernetes bounds objects to it.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Most objects of one `POST /v1/apply`. It is one store transaction with a compare and a put per
/// object plus the leader fence, and etcd refuses transactions of more than 128 operations by
/// default (`--max-txn-ops`).
pub const MAX_APPLY_OBJECTS: usize = 100;

/// The length of `value` encoded as compact JSON (what the controller stores and serves).
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and the model types always serialize.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reports a record whose encoding is over [`MAX_RECORD_BYTES`].
pub(crate) fn check_record_size<T: Serialize + ?Sized>(p: &mut Problems, what: &str, value: &T) {
    let len = encoded_len(value);
    if len > MAX_RECORD_BYTES {
        p.add(
            ".",
            format!(
                "the {what} encodes to {len} bytes, over the bound of {MAX_RECORD_BYTES} bytes per record (MAX_RECORD_BYTES: every node holds every {what})"
            ),
        );
    }
}

/// Reports a record whose encoding is over `max` bytes (`bound` names the constant).
pub(crate) fn check_encoded_size<T: Serialize + ?Sized>(
    p: &mut Problems,
    what: &str,
    value: &T,
    max: usize,
    bound: &str,
) {
    let len = encoded_len(value);
    if len > max {
        p.add(
            ".",
            format!(
                "the {what} encodes to {len} bytes, over the bound of {max} bytes per record ({bound}: every node holds every {what})"
            ),
        );
    }
}

/// A user's text for a message: whole when short, else its start and its length (a refused
/// 1 MB label value must not come back as a 1 MB error).
pub fn shown(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.len() <= SHOWN {
        return format!("{text:?}");
    }
    let mut end = SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_len_is_the_compact_json_length() {
        let v = serde_json::json!({"a": [1, 2], "b": "x\"y"});
        assert_eq!(
            encoded_len(&v),
            serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(0)
        );
    }

    #[test]
    fn long_text_is_cut_in_messages() {
        assert_eq!(shown("abc"), "\"abc\"");
        let long = "é".repeat(1000);
        let s = shown(&long);
        assert!(s.len() < 100 && s.ends_with("(2000 bytes)"), "{s}");
    }
}
