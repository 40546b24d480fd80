//! The etcd v3 backend: the same [`Datastore`] contract on an etcd cluster, so several
//! controllers (and several Seam clusters, each under its own key namespace) share one store.
//!
//! Mapping:
//! - Keys are stored as `<namespace><key>`; the namespace (e.g. `/seam-prod`) is invisible to
//!   callers.
//! - Revisions: etcd counts an empty store as revision 1, Seam as 0, so a Seam revision is the
//!   etcd revision minus one everywhere (key revisions, txn results, watch starts, compaction).
//!   With a shared etcd, revisions jump by other tenants' writes; they still only grow.
//! - [`Compare::Absent`] is `version == 0`; `ModRevision(k, 0)` is `mod_revision == 0`, which
//!   etcd also holds for an absent key.
//! - History: the local stores keep [`StoreConfig::history`] *events*; here the store keeps that
//!   many *revisions*: after its own commits it compacts etcd to `revision - history + 1`
//!   (in batches of a tenth of the history). Run etcd without auto-compaction, or with a
//!   longer retention. A watch from a compacted revision fails with [`Error::Compacted`].
//! - Watches: one etcd watch per [`Watch`], pumped by a task into a bounded channel with the
//!   same lag rule as the local stores ([`Error::WatcherLagged`]); the task ends (and cancels
//!   the etcd watch) when the [`Watch`] is dropped. A broken connection ends the stream with
//!   [`Error::Etcd`]; callers re-watch from the next revision they need.
//!
//! Every request has a timeout, so an unreachable etcd shows up as [`Error::Etcd`] within
//! seconds rather than as a hang; the client reconnects by itself once etcd is back.
//!
//! TLS: `https://` endpoints need [`EtcdConfig::tls`] (the CA that signed etcd's serving
//! certificates and, for an etcd running with `--client-cert-auth`, a client certificate);
//! rustls through etcd-client's `tls` feature, no OpenSSL. The certificates are read once, at
//! connect: rotating the client certificate takes a reconnect (a controller restart).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions,
    Txn as EtcdTxn, TxnOp, WatchOptions, WatchStream,
};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::types::{
    Compare, Datastore, Event, KeyValue, LeaseId, Op, StoreConfig, Txn, TxnOutcome,
};
use crate::watch::Watch;

/// How long one etcd request may take before it fails with [`Error::Etcd`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 keep-alive: a dead connection (a killed member) under an idle watch is noticed
/// within about two of these.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// Keys per page when listing, so a large prefix never exceeds gRPC's message limits.
const LIST_PAGE: i64 = 1000;

/// Where and how to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the cluster members, e.g. `http://127.0.0.1:2379`; all `http://` or all
    /// `https://` (then [`EtcdConfig::tls`] is required).
    pub endpoints: Vec<String>,
    /// Prefix put in front of every key, so several clusters can share one etcd (e.g.
    /// `/cluster-a`). Empty for none.
    pub namespace: String,
    /// TLS settings for `https://` endpoints; `None` for `http://` ones.
    pub tls: Option<EtcdTls>,
}

impl EtcdConfig {
    /// Plain-HTTP (or not yet TLS-configured) settings for `endpoints` under `namespace`.
    pub fn new(endpoints: Vec<String>, namespace: impl Into<String>) -> Self {
        Self {
            endpoints,
            namespace: namespace.into(),
            tls: None,
        }
    }

    /// The same settings with TLS.
    pub fn with_tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Checks that the endpoints and the TLS settings fit together, so a mismatch is named at
    /// connect rather than showing up later as an obscure transport error.
    fn check(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::EtcdSettings { reason });
        if self.endpoints.is_empty() {
            return invalid("no endpoints".to_string());
        }
        let https = self
            .endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        let http = self
            .endpoints
            .iter()
            .filter(|e| e.starts_with("http://"))
            .count();
        if https > 0 && http > 0 {
            return invalid(format!(
                "endpoints {:?} mix http:// and https://: use one scheme for all members",
                self.endpoints
            ));
        }
        if http + https < self.endpoints.len() {
            return invalid(format!(
                "endpoints {:?}: each must start with http:// or https://",
                self.endpoints
            ));
        }
        match (&self.tls, https > 0) {
            (None, true) => invalid(format!(
                "endpoints {:?} are https:// but no TLS settings were given: \
                 etcd over TLS needs the CA that signed its certificates (seam-controller: \
                 --etcd-ca) and usually a client certificate (--etcd-cert, --etcd-key)",
                self.endpoints
            )),
            (Some(_), false) => invalid(format!(
                "TLS settings were given but endpoints {:?} are plain http://: use https://",
                self.endpoints
            )),
            (Some(tls), true) => tls.check(),
            (None, false) => Ok(()),
        }
    }
}

/// How to talk TLS to etcd: whom to trust and which client certificate to present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM of the CA certificate(s) that signed the members' serving certificates. Only these
    /// are trusted (not the system's roots).
    pub ca_pem: String,
    /// The client certificate presented to etcd; needed when etcd runs with
    /// `--client-cert-auth` (without one such an etcd refuses every request).
    pub client: Option<EtcdClientCert>,
}

/// A client certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdClientCert {
    /// The certificate (chain), PEM.
    pub cert_pem: String,
    /// The private key, PEM (never printed by `Debug`).
    pub key_pem: String,
}

impl std::fmt::Debug for EtcdClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClientCert")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .finish_non_exhaustive()
    }
}

impl EtcdTls {
    /// A shallow look at the PEM texts: the client parses them only when it first connects,
    /// and then reports a swapped or empty file as an obscure transport error.
    fn check(&self) -> Result<()> {
        const CERT: &str = "-----BEGIN CERTIFICATE-----";
        let invalid = |what: &str, wanted: &str| {
            Err(Error::EtcdSettings {
                reason: format!("the {what} is not PEM with a {wanted}"),
            })
        };
        if !self.ca_pem.contains(CERT) {
            return invalid("TLS CA", "CERTIFICATE");
        }
        if let Some(client) = &self.client {
            if !client.cert_pem.contains(CERT) {
                return invalid("client certificate", "CERTIFICATE");
            }
            // PKCS#8 ("PRIVATE KEY"), SEC1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY").
            if !client.key_pem.contains("PRIVATE KEY-----") {
                return invalid("client key", "PRIVATE KEY");
            }
        }
        Ok(())
    }

    fn options(&self) -> etcd_client::TlsOptions {
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca_pem));
        if let Some(client) = &self.client {
            tls = tls.identity(etcd_client::Identity::from_pem(
                &client.cert_pem,
                &client.key_pem,
            ));
        }
        tls
    }
}

/// A [`Datastore`] on an etcd v3 cluster. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct EtcdStore {
    /// Boxed: the client is several KiB, and [`crate::AnyStore`] is passed by value.
    client: Arc<Client>,
    namespace: Arc<str>,
    config: StoreConfig,
    /// The etcd revision this process last compacted to (0: not yet).
    compacted: Arc<AtomicI64>,
    /// How often a request refused by one member is sent again.
    retries: u32,
    /// What to add to an error when the TLS connection broke (TLS only, see
    /// [`broke_after_connecting`]).
    tls_hint: Option<&'static str>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("namespace", &self.namespace)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn etcd_err<'a>(op: &'static str, key: &'a str) -> impl FnOnce(etcd_client::Error) -> Error + 'a {
    move |source| Error::Etcd {
        op,
        key: key.to_string(),
        hint: "",
        source: Box::new(source),
    }
}

/// Said when a TLS connection to etcd breaks and the client has no certificate.
const HINT_NO_CLIENT_CERT: &str = " (the TLS connection to etcd broke: if etcd is up, it is \
     likely refusing this client for having no certificate; an etcd running with \
     --client-cert-auth needs a client certificate and key)";
/// The same with a client certificate.
const HINT_CLIENT_CERT: &str = " (the TLS connection to etcd broke: if etcd is up, it likely \
     does not accept the client certificate; is it signed by a CA in etcd's --trusted-ca-file, \
     and valid now (is this machine's clock right)?)";

/// Whether the connection broke under a request that reached etcd's port. Under TLS 1.3 the
/// server checks the client certificate after the client considers the handshake done, so a
/// refused certificate shows up only under the first request, and in several guises: etcd's
/// alert when it arrives in time, a broken pipe, or the connection closed under the request.
/// A refused TCP connection (etcd down) and our own refusal of etcd's certificate are not this.
fn broke_after_connecting(error: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return false;
    };
    let mut transport = false;
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return false;
            }
        }
        if e.to_string().contains("invalid peer certificate") {
            return false;
        }
        transport |= e.is::<tonic::transport::Error>();
        source = e.source();
    }
    transport
}

/// Whether the request never left this process: the connection to the member it was routed to
/// was refused (a killed member), so sending it again elsewhere cannot apply it twice.
fn never_sent(error: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return false;
    };
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = e.source();
    }
    false
}

/// etcd revision -> Seam revision.
fn seam_rev(etcd: i64) -> u64 {
    u64::try_from(etcd.saturating_sub(1)).unwrap_or(0)
}

/// Seam revision -> etcd revision.
fn etcd_rev(seam: u64) -> i64 {
    i64::try_from(seam)
        .unwrap_or(i64::MAX - 1)
        .saturating_add(1)
}

/// The end of the range of keys starting with `prefix` (etcd's `range_end`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Empty prefix (or all 0xff): every key from `prefix` on.
    vec![0]
}

impl EtcdStore {
    /// Connects to etcd with the default [`StoreConfig`]. Connecting is lazy: this succeeds
    /// while etcd is down, and operations fail with [`Error::Etcd`] until it is up.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        Self::connect_with(config, StoreConfig::default()).await
    }

    /// Connects to etcd with the given tunables.
    ///
    /// Fails at once with [`Error::EtcdSettings`] when the endpoints and the TLS settings do
    /// not fit together (`https://` without TLS settings, TLS with `http://`, mixed schemes).
    pub async fn connect_with(etcd: EtcdConfig, config: StoreConfig) -> Result<Self> {
        etcd.check()?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEPALIVE, KEEPALIVE)
            .with_keep_alive_while_idle(true)
            // A member cut off from the quorum refuses instead of serving stale reads or hanging.
            .with_require_leader(true);
        if let Some(tls) = &etcd.tls {
            options = options.with_tls(tls.options());
        }
        let client = Client::connect(&etcd.endpoints, Some(options))
            .await
            .map_err(etcd_err("connect", ""))?;
        Ok(Self {
            client: Arc::new(client),
            namespace: Arc::from(etcd.namespace.as_str()),
            config,
            compacted: Arc::new(AtomicI64::new(0)),
            retries: u32::try_from(etcd.endpoints.len().saturating_mul(2)).unwrap_or(u32::MAX),
            tls_hint: etcd.tls.as_ref().map(|tls| match tls.client {
                None => HINT_NO_CLIENT_CERT,
                Some(_) => HINT_CLIENT_CERT,
            }),
        })
    }

    /// Maps an etcd client error of `op` on `key` to [`Error::Etcd`], with a hint when TLS is
    /// the likely cause.
    fn err<'a>(
        &self,
        op: &'static str,
        key: &'a str,
    ) -> impl FnOnce(etcd_client::Error) -> Error + 'a {
        let hint = self.tls_hint;
        move |source| Error::Etcd {
            op,
            key: key.to_string(),
            hint: match hint {
                Some(hint) if broke_after_connecting(&source) => hint,
                _ => "",
            },
            source: Box::new(source),
        }
    }

    /// Runs `call`, again (up to twice per endpoint) while it fails before reaching a member:
    /// the client balances over every endpoint, a killed one included, until it notices.
    async fn call<T, F, Fut>(&self, mut call: F) -> std::result::Result<T, etcd_client::Error>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut left = self.retries;
        loop {
            match call(Client::clone(&self.client)).await {
                Err(e) if left > 0 && never_sent(&e) => {
                    left -= 1;
                    tracing::debug!(error = %e, "etcd member refused the connection, trying another");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                result => return result,
            }
        }
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.namespace.len() + key.len());
        full.extend_from_slice(self.namespace.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// The etcd range `[key, end)` of every key under `prefix`. etcd refuses an empty key, so
    /// "everything" is spelled `["\0", "\0")` (from the smallest key on).
    fn range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let full = self.full_key(prefix);
        if full.is_empty() {
            (vec![0], vec![0])
        } else {
            let end = prefix_end(&full);
            (full, end)
        }
    }

    /// The key without the namespace; `None` for a key that is not valid UTF-8 or outside it.
    fn short_key<'a>(&self, full: &'a [u8]) -> Option<&'a str> {
        let rest = full.strip_prefix(self.namespace.as_bytes())?;
        std::str::from_utf8(rest).ok()
    }

    fn key_value(&self, op: &'static str, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        let key = self
            .short_key(kv.key())
            .ok_or_else(|| Error::EtcdResponse {
                op,
                reason: format!("key {:?} is not UTF-8 or outside the namespace", kv.key()),
            })?;
        Ok(KeyValue {
            key: key.to_string(),
            value: kv.value().to_vec(),
            create_revision: seam_rev(kv.create_revision()),
            mod_revision: seam_rev(kv.mod_revision()),
        })
    }

    /// The current etcd revision.
    async fn etcd_revision(&self) -> Result<i64> {
        let (key, end) = self.range("");
        let options = GetOptions::new().with_range(end).with_count_only();
        let resp = self
            .call(|mut c| {
                let (k, o) = (key.clone(), options.clone());
                async move { c.get(k, Some(o)).await }
            })
            .await
            .map_err(self.err("revision", ""))?;
        header_revision("revision", resp.header())
    }

    /// Compacts etcd so that it keeps the last `history` revisions, once enough accumulated.
    async fn maybe_compact(&self, etcd_revision: i64) {
        let history = i64::try_from(self.config.history).unwrap_or(i64::MAX);
        let target = etcd_revision.saturating_sub(history).saturating_add(1);
        let batch = (history / 10).max(1);
        let last = self.compacted.load(Ordering::Relaxed);
        if target <= 1 || target < last.saturating_add(batch) {
            return;
        }
        self.compacted.fetch_max(target, Ordering::Relaxed);
        // Another replica may have compacted further already; that error is harmless.
        if let Err(e) = self.client.kv_client().compact(target, None).await {
            tracing::debug!(revision = target, error = %e, "etcd compaction skipped");
        }
    }

    async fn open_watch(&self, prefix: &str, start: i64) -> Result<WatchStream> {
        let (full, end) = self.range(prefix);
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(start);
        let mut stream = self
            .call(|mut c| {
                let (k, o) = (full.clone(), options.clone());
                async move { c.watch(k, Some(o)).await }
            })
            .await
            .map_err(self.err("watch", prefix))?;
        // The first response confirms the watch; events only follow it.
        match stream.message().await.map_err(self.err("watch", prefix))? {
            Some(resp) if resp.created() && !resp.canceled() => Ok(stream),
            Some(resp) => Err(Error::EtcdResponse {
                op: "watch",
                reason: format!("watch not created: {}", resp.cancel_reason()),
            }),
            None => Err(Error::EtcdResponse {
                op: "watch",
                reason: "stream ended before the watch was created".to_string(),
            }),
        }
    }

    /// Whether history at `start` is compacted: a read at a compacted revision fails with
    /// OutOfRange (a future revision fails the same way, so `start` must not be in the future).
    async fn is_compacted(&self, prefix: &str, start: i64) -> Result<bool> {
        let (key, end) = self.range(prefix);
        let options = GetOptions::new()
            .with_range(end)
            .with_count_only()
            .with_revision(start);
        match self
            .call(|mut c| {
                let (k, o) = (key.clone(), options.clone());
                async move { c.get(k, Some(o)).await }
            })
            .await
        {
            Ok(_) => Ok(false),
            Err(etcd_client::Error::GRpcStatus(status))
                if status.code() == tonic::Code::OutOfRange =>
            {
                Ok(true)
            }
            Err(e) => Err(self.err("watch", prefix)(e)),
        }
    }
}

fn header_revision(op: &'static str, header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    header.map(|h| h.revision()).ok_or(Error::EtcdResponse {
        op,
        reason: "response without header".to_string(),
    })
}

impl Datastore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let full = self.full_key(key);
        let resp = self
            .call(|mut c| {
                let full = full.clone();
                async move { c.get(full, None).await }
            })
            .await
            .map_err(self.err("get", key))?;
        resp.kvs()
            .first()
            .map(|kv| self.key_value("get", kv))
            .transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(u64, Vec<KeyValue>)> {
        let (full, end) = self.range(prefix);
        let mut out = Vec::new();
        let mut from = full;
        // Every page is read at the first page's revision, so the list is one snapshot.
        let mut at: Option<i64> = None;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if let Some(rev) = at {
                options = options.with_revision(rev);
            }
            let resp = self
                .call(|mut c| {
                    let (k, o) = (from.clone(), options.clone());
                    async move { c.get(k, Some(o)).await }
                })
                .await
                .map_err(self.err("list", prefix))?;
            let rev = match at {
                Some(rev) => rev,
                None => header_revision("list", resp.header())?,
            };
            at = Some(rev);
            for item in resp.kvs() {
                out.push(self.key_value("list", item)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((seam_rev(rev), out)),
            }
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        txn.check()?;
        let first_key = txn
            .success
            .first()
            .map(|op| op.key().to_string())
            .unwrap_or_default();
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::Absent(key) => {
                    EtcdCompare::version(self.full_key(key), CompareOp::Equal, 0)
                }
                Compare::ModRevision(key, 0) => {
                    EtcdCompare::mod_revision(self.full_key(key), CompareOp::Equal, 0)
                }
                Compare::ModRevision(key, rev) => {
                    EtcdCompare::mod_revision(self.full_key(key), CompareOp::Equal, etcd_rev(*rev))
                }
            })
            .collect();
        let has_lease = txn
            .success
            .iter()
            .any(|op| matches!(op, Op::Put { lease: Some(_), .. }));
        let ops: Vec<TxnOp> = txn
            .success
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => TxnOp::put(
                    self.full_key(key),
                    value.clone(),
                    lease.map(|l| PutOptions::new().with_lease(l.0)),
                ),
                Op::Delete { key } => TxnOp::delete(self.full_key(key), None),
            })
            .collect();
        let request = EtcdTxn::new().when(compares).and_then(ops);
        let resp = match self
            .call(|mut c| {
                let request = request.clone();
                async move { c.txn(request).await }
            })
            .await
        {
            Ok(resp) => resp,
            // The only request in a txn that names something that may be missing is a lease.
            Err(etcd_client::Error::GRpcStatus(status))
                if has_lease && status.code() == tonic::Code::NotFound =>
            {
                let lease = txn
                    .success
                    .iter()
                    .find_map(|op| match op {
                        Op::Put { lease, .. } => *lease,
                        Op::Delete { .. } => None,
                    })
                    .unwrap_or(LeaseId(0));
                return Err(Error::LeaseNotFound { lease });
            }
            Err(e) => return Err(self.err("txn", &first_key)(e)),
        };
        if !resp.succeeded() {
            return Ok(TxnOutcome::CompareFailed);
        }
        let revision = header_revision("txn", resp.header())?;
        self.maybe_compact(revision).await;
        Ok(TxnOutcome::Committed {
            revision: seam_rev(revision),
        })
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch> {
        let current = self.etcd_revision().await?;
        let start = if from_revision == 0 {
            current + 1
        } else {
            etcd_rev(from_revision)
        };
        let mut stream = self.open_watch(prefix, start).await?;
        if start <= current && self.is_compacted(prefix, start).await? {
            // etcd tells the compaction revision only on the watch stream.
            let oldest = wait_for_compaction(&mut stream).await;
            return Err(Error::Compacted {
                requested: from_revision,
                oldest: oldest.map_or(0, seam_rev),
            });
        }
        // As in the local stores: history up to now is replayed without limit, live events go
        // through a bounded channel with one slot reserved for the lag error.
        let (replay_tx, replay_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::channel(self.config.watch_buffer.max(2));
        tokio::spawn(pump(
            self.clone(),
            prefix.to_string(),
            Pumped {
                next: seam_rev(start),
                replay_until: current,
                replay: Some(replay_tx),
            },
            stream,
            tx,
        ));
        Ok(Watch::from_channels(replay_rx, rx))
    }

    async fn revision(&self) -> Result<u64> {
        Ok(seam_rev(self.etcd_revision().await?))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        // etcd leases count whole seconds.
        let secs = i64::try_from(ttl.as_millis().div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1);
        let resp = self
            .call(|mut c| async move { c.lease_grant(secs, None).await })
            .await
            .map_err(self.err("grant_lease", ""))?;
        Ok(LeaseId(resp.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        match self
            .call(|mut c| async move { c.lease_keep_alive(lease.0).await })
            .await
        {
            Ok(_) => Ok(()),
            // etcd-client reports a TTL of 0 (the lease is gone) this way.
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => Err(Error::LeaseNotFound { lease }),
            Err(e) => Err(self.err("keep_alive", "")(e)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        match self
            .call(|mut c| async move { c.lease_revoke(lease.0).await })
            .await
        {
            Ok(_) => Ok(()),
            Err(etcd_client::Error::GRpcStatus(status))
                if status.code() == tonic::Code::NotFound =>
            {
                Ok(())
            }
            Err(e) => Err(self.err("revoke_lease", "")(e)),
        }
    }
}

/// Reads the watch stream until etcd reports the compaction (it checks unsynced watchers every
/// 100 ms); `None` when it does not say within a few seconds.
async fn wait_for_compaction(stream: &mut WatchStream) -> Option<i64> {
    let wait = async {
        while let Ok(Some(resp)) = stream.message().await {
            if resp.compact_revision() > 0 {
                return Some(resp.compact_revision());
            }
        }
        None
    };
    tokio::time::timeout(REQUEST_TIMEOUT, wait)
        .await
        .ok()
        .flatten()
}

/// Where a pump is in its watch.
struct Pumped {
    /// The next revision the consumer expects (for the compaction error).
    next: u64,
    /// Events up to this etcd revision are history and go to `replay`.
    replay_until: i64,
    /// Dropped once the first live event arrives, which ends the replay for the consumer.
    replay: Option<mpsc::UnboundedSender<Event>>,
}

/// Moves events from the etcd watch into the [`Watch`]'s channels until the consumer goes away,
/// it lags, or the etcd stream fails.
async fn pump(
    store: EtcdStore,
    prefix: String,
    mut state: Pumped,
    mut stream: WatchStream,
    tx: mpsc::Sender<Result<Event>>,
) {
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            () = tx.closed() => return,
        };
        let resp = match message {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                let _ = tx.try_send(Err(Error::EtcdResponse {
                    op: "watch",
                    reason: "etcd ended the watch stream".to_string(),
                }));
                return;
            }
            Err(e) => {
                let _ = tx.try_send(Err(store.err("watch", &prefix)(e)));
                return;
            }
        };
        if resp.compact_revision() > 0 {
            state.replay = None;
            let _ = tx.try_send(Err(Error::Compacted {
                requested: state.next,
                oldest: seam_rev(resp.compact_revision()),
            }));
            return;
        }
        if resp.canceled() {
            let _ = tx.try_send(Err(Error::EtcdResponse {
                op: "watch",
                reason: format!("watch canceled: {}", resp.cancel_reason()),
            }));
            return;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let Some(key) = store.short_key(kv.key()) else {
                continue;
            };
            let revision = seam_rev(kv.mod_revision());
            let event = Event {
                revision,
                key: key.to_string(),
                value: match ev.event_type() {
                    EventType::Put => Some(kv.value().to_vec()),
                    EventType::Delete => None,
                },
            };
            state.next = revision;
            if kv.mod_revision() <= state.replay_until {
                if let Some(replay) = &state.replay {
                    if replay.send(event).is_err() {
                        return;
                    }
                    continue;
                }
            }
            state.replay = None;
            if tx.capacity() <= 1 {
                tracing::warn!(%prefix, revision, "dropping lagging etcd watcher");
                let _ = tx.try_send(Err(Error::WatcherLagged {
                    prefix: prefix.clone(),
                    revision,
                }));
                return;
            }
            if tx.try_send(Ok(event)).is_err() {
                return;
            }
        }
    }
}
