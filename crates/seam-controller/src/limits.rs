//! Per-client limits, so one misbehaving client cannot starve the others: a token bucket of
//! requests per identity (429 `RateLimited` with `Retry-After`) and a cap on the watch streams
//! one identity holds at once (429 `TooManyWatches`).
//!
//! Clients are told apart by identity (`node/n1`); anonymous callers by their peer address
//! when the listener gives one, else they share one bucket. Root on the node (the local Unix
//! socket) and the explicitly insecure plain-TCP listener are not limited: the CNI plug-in and
//! the lab depend on them, and they are as trusted as the machine.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use seam_model::identity::LOCAL_ADMIN;
use seam_model::CallerRole;
use tokio::time::Instant;

use crate::caller::Caller;
use crate::error::{Error, Result};

/// The default of `--rate-limit`: requests per second per identity.
pub const DEFAULT_RATE_LIMIT: u32 = 200;
/// The default of `--max-watches-per-client`.
pub const DEFAULT_MAX_WATCHES_PER_CLIENT: u32 = 8;

/// Flow batches (`POST /v1/flows`) one client may post per second, with bursts of twice as
/// many, on top of its request rate: an agent posts every 200 ms or so, and each batch may be
/// up to the body bound, so this is what bounds the parsing a flooding node costs.
pub const FLOW_POSTS_PER_SECOND: u32 = 20;

/// The name of the identity the plain-TCP listener (`--insecure-plain-tcp`) gives its callers.
const INSECURE_PLAIN_TCP: &str = "insecure-plain-tcp";

/// Above this many buckets, the full (idle) ones are dropped, so addresses that called once do
/// not accumulate.
const MAX_IDLE_BUCKETS: usize = 4096;

/// Open watch streams per client.
type WatchCounts = Arc<Mutex<HashMap<String, u32>>>;

/// The per-client limits ([`crate::Controller::with_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests per second one client may send, with bursts of twice as many (`--rate-limit`);
    /// 0 turns the limit off.
    pub rate_limit: u32,
    /// Watch streams one client may hold open at once (`--max-watches-per-client`); 0 turns the
    /// cap off.
    pub max_watches_per_client: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate_limit: DEFAULT_RATE_LIMIT,
            max_watches_per_client: DEFAULT_MAX_WATCHES_PER_CLIENT,
        }
    }
}

/// A client's request budget.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limits in force and each client's state.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    limits: Mutex<Limits>,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Per client: its budget of flow batches ([`FLOW_POSTS_PER_SECOND`]).
    flow_buckets: Mutex<HashMap<String, Bucket>>,
    watches: WatchCounts,
}

/// One open watch stream, counted against its client until dropped (when the stream ends or
/// the client goes away).
#[derive(Debug)]
pub(crate) struct WatchSlot {
    watches: Option<(WatchCounts, String)>,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        if let Some((watches, who)) = self.watches.take() {
            let mut watches = watches.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = watches.get_mut(&who) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    watches.remove(&who);
                }
            }
        }
    }
}

/// Takes one token of `who`'s bucket in `buckets` (refilled at `rate` per second, holding at
/// most twice that), or refuses with how long to wait.
fn take(buckets: &Mutex<HashMap<String, Bucket>>, who: String, rate: u32) -> Result<()> {
    let rate_f = f64::from(rate);
    let burst = rate_f * 2.0;
    let now = Instant::now();
    let mut buckets = buckets.lock().unwrap_or_else(PoisonError::into_inner);
    if buckets.len() > MAX_IDLE_BUCKETS && !buckets.contains_key(&who) {
        buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate_f < burst);
    }
    let bucket = buckets.entry(who.clone()).or_insert(Bucket {
        tokens: burst,
        at: now,
    });
    let refilled = bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate_f;
    bucket.tokens = refilled.min(burst);
    bucket.at = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        return Ok(());
    }
    // Whole seconds (what Retry-After carries), at least one.
    let wait = ((1.0 - bucket.tokens) / rate_f).ceil().max(1.0);
    Err(Error::RateLimited {
        who,
        rate,
        retry_after_secs: wait as u64,
    })
}

/// Who a limit is counted against; `None` for callers that are not limited.
fn client_of(caller: &Caller, peer: Option<IpAddr>) -> Option<String> {
    match caller {
        Caller::Known(id)
            if id.role == CallerRole::Admin
                && (id.name == LOCAL_ADMIN || id.name == INSECURE_PLAIN_TCP) =>
        {
            None
        }
        Caller::Known(id) => Some(id.to_string()),
        Caller::Anonymous => Some(match peer {
            Some(ip) => format!("anonymous {ip}"),
            None => "anonymous".to_string(),
        }),
    }
}

impl Limiter {
    pub(crate) fn set(&self, limits: Limits) {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner) = limits;
    }

    pub(crate) fn get(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one request from the caller's budget, or refuses it with how long to wait.
    pub(crate) fn admit(&self, caller: &Caller, peer: Option<IpAddr>) -> Result<()> {
        let rate = self.get().rate_limit;
        let Some(who) = client_of(caller, peer).filter(|_| rate > 0) else {
            return Ok(());
        };
        take(&self.buckets, who, rate)
    }

    /// Takes one flow batch from the caller's flow budget ([`FLOW_POSTS_PER_SECOND`]); off,
    /// like the request rate, when `--rate-limit` is 0 and for the callers it never limits.
    pub(crate) fn admit_flows(&self, caller: &Caller) -> Result<()> {
        let Some(who) = client_of(caller, None).filter(|_| self.get().rate_limit > 0) else {
            return Ok(());
        };
        take(
            &self.flow_buckets,
            format!("{who} posting flows"),
            FLOW_POSTS_PER_SECOND,
        )
    }

    /// A slot for one more watch stream of the caller, or a refusal when it holds the most.
    pub(crate) fn watch_slot(&self, caller: &Caller) -> Result<WatchSlot> {
        let limit = self.get().max_watches_per_client;
        // Watches need an identity, so the peer address does not matter here.
        let Some(who) = client_of(caller, None).filter(|_| limit > 0) else {
            return Ok(WatchSlot { watches: None });
        };
        let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let open = watches.entry(who.clone()).or_insert(0);
        if *open >= limit {
            return Err(Error::TooManyWatches { who, limit });
        }
        *open += 1;
        Ok(WatchSlot {
            watches: Some((self.watches.clone(), who)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seam_model::Identity;

    fn limiter(rate_limit: u32, max_watches_per_client: u32) -> Limiter {
        let l = Limiter::default();
        l.set(Limits {
            rate_limit,
            max_watches_per_client,
        });
        l
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_gets_its_burst_then_its_rate() {
        let l = limiter(10, 8);
        let n1 = Caller::Known(Identity::node("n1", 1));
        for _ in 0..20 {
            l.admit(&n1, None).unwrap();
        }
        let err = l.admit(&n1, None).unwrap_err();
        assert_eq!(err.status(), 429);
        assert_eq!(err.reason(), "RateLimited");
        assert!(matches!(
            err,
            Error::RateLimited {
                retry_after_secs: 1,
                ..
            }
        ));
        // Another client is not affected.
        l.admit(&Caller::Known(Identity::node("n2", 1)), None)
            .unwrap();
        // A tenth of a second buys one request at 10/s.
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        l.admit(&n1, None).unwrap();
        assert!(l.admit(&n1, None).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn anonymous_callers_are_limited_per_address_and_root_not_at_all() {
        let l = limiter(1, 8);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            l.admit(&Caller::Anonymous, Some(a)).unwrap();
        }
        assert!(l.admit(&Caller::Anonymous, Some(a)).is_err());
        l.admit(&Caller::Anonymous, Some(b)).unwrap();
        let root = Caller::Known(Identity::local_admin());
        for _ in 0..100 {
            l.admit(&root, None).unwrap();
        }
        // 0 turns the limit off.
        let off = limiter(0, 8);
        for _ in 0..1000 {
            off.admit(&Caller::Anonymous, None).unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_posting_flows_every_200_ms_is_never_refused_and_a_flood_is() {
        let l = limiter(DEFAULT_RATE_LIMIT, 8);
        let n1 = Caller::Known(Identity::node("n1", 1));
        // A minute of batches every 200 ms, each also a request.
        for _ in 0..300 {
            l.admit(&n1, None).unwrap();
            l.admit_flows(&n1).unwrap();
            tokio::time::advance(std::time::Duration::from_millis(200)).await;
        }
        // A flood: the burst passes, then one batch in 1/20 s.
        let mut passed = 0;
        for _ in 0..1000 {
            if l.admit_flows(&n1).is_ok() {
                passed += 1;
            }
        }
        assert_eq!(passed, 2 * FLOW_POSTS_PER_SECOND);
        let err = l.admit_flows(&n1).unwrap_err();
        assert_eq!(err.status(), 429);
        assert!(
            err.message().contains("node/n1 posting flows"),
            "{}",
            err.message()
        );
        // Other nodes and other requests of this node are not affected.
        l.admit_flows(&Caller::Known(Identity::node("n2", 1)))
            .unwrap();
        l.admit(&n1, None).unwrap();
    }

    #[test]
    fn watches_are_capped_per_client_and_freed_when_dropped() {
        let l = limiter(10, 2);
        let n1 = Caller::Known(Identity::node("n1", 1));
        let first = l.watch_slot(&n1).unwrap();
        let _second = l.watch_slot(&n1).unwrap();
        let err = l.watch_slot(&n1).unwrap_err();
        assert_eq!(err.status(), 429);
        assert_eq!(err.reason(), "TooManyWatches");
        let _other = l
            .watch_slot(&Caller::Known(Identity::node("n2", 1)))
            .unwrap();
        drop(first);
        let _third = l.watch_slot(&n1).unwrap();
        let root = Caller::Known(Identity::local_admin());
        let many: Vec<_> = (0..10).map(|_| l.watch_slot(&root).unwrap()).collect();
        assert_eq!(many.len(), 10);
    }
}
