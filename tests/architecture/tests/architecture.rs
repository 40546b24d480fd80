//! The crate graph is the architecture (ARCHITECTURE.md, "Crate direction"). These tests read the
//! workspace's declared dependencies with `cargo metadata` and fail when a crate depends against
//! the direction, so a wrong `Cargo.toml` line is caught in review rather than found later as I/O
//! in a crate that was meant to be testable without a kernel.

#![allow(clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Crates that do no I/O: no socket, file, process or async runtime. They may depend only on each
/// other and on crates that do no I/O either.
const PURE: &[&str] = &[
    "seam-model",
    "seam-policy",
    "seam-firewall",
    "seam-ipam",
    "seam-dataplane",
    "seam-nft",
    "seam-conformance",
];

/// Crates at the edges, which do I/O of some kind. Every workspace crate is in one of the two
/// lists, so a new crate gets a place in the direction when it is added.
const EDGES: &[&str] = &[
    "seam-linux",
    "seam-store",
    "seam-client",
    "seam-pki",
    "seam-cni",
    "seam-agent",
    "seam-controller",
    "seam-k8s",
    "seam-lab",
    "seamd",
    "seam",
    "seam-bench",
    "seam-e2e",
    "seam-e2e-cri",
    "seam-deploy-tests",
    "seam-architecture-tests",
];

/// Third-party crates that open sockets, files or processes, or run an async runtime.
const IO_CRATES: &[&str] = &[
    "tokio",
    "hyper",
    "hyper-util",
    "axum",
    "tower",
    "tonic",
    "nix",
    "kube",
    "netlink-sys",
    "netlink-proto",
    "rtnetlink",
    "redb",
    "etcd-client",
    "tempfile",
];

/// Netlink sockets and route messages: seam-linux is the only crate that talks to the kernel.
const NETLINK_SOCKETS: &[&str] = &[
    "netlink-sys",
    "netlink-proto",
    "rtnetlink",
    "netlink-packet-route",
];

/// nf_tables message types are values: seam-nft builds them, seam-linux sends them.
const NETLINK_MESSAGES: &[&str] = &["netlink-packet-netfilter", "netlink-packet-core"];

/// The stores' own libraries: only seam-store opens them.
const STORE_CRATES: &[&str] = &["redb", "etcd-client"];

/// A dependency as `cargo metadata` declares it.
struct Dep {
    name: String,
    /// `None` for a normal dependency, `Some("dev")` or `Some("build")` otherwise.
    kind: Option<String>,
}

fn workspace_crates() -> BTreeMap<String, Vec<Dep>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output();
    let out = match out {
        Ok(out) if out.status.success() => out,
        Ok(out) => panic!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cargo metadata could not run: {e}"),
    };
    let meta: Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => panic!("cargo metadata printed no JSON: {e}"),
    };
    let mut crates = BTreeMap::new();
    for package in meta["packages"].as_array().into_iter().flatten() {
        let Some(name) = package["name"].as_str() else {
            continue;
        };
        let deps = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                Some(Dep {
                    name: d["name"].as_str()?.to_string(),
                    kind: d["kind"].as_str().map(str::to_string),
                })
            })
            .collect();
        crates.insert(name.to_string(), deps);
    }
    crates
}

/// The host's target triple, so `cargo metadata` resolves only what this platform builds (and
/// needs nothing that is not already downloaded).
fn host_triple() -> String {
    let out = Command::new("rustc").arg("-vV").output();
    let text = match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => panic!("rustc -vV could not run"),
    };
    match text.lines().find_map(|l| l.strip_prefix("host: ")) {
        Some(host) => host.trim().to_string(),
        None => panic!("rustc -vV printed no host line"),
    }
}

/// For each crate of `names`, every crate it ships with: the closure of its normal
/// dependencies in the resolved graph (third-party crates included).
fn shipped_closure(names: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(host_triple())
        .current_dir(&root)
        .output();
    let meta: Value = match out {
        Ok(out) if out.status.success() => match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => panic!("cargo metadata printed no JSON: {e}"),
        },
        Ok(out) => panic!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cargo metadata could not run: {e}"),
    };
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let normal_deps: BTreeMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|node| {
            let deps = node["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|k| k["kind"].is_null())
                })
                .filter_map(|d| d["pkg"].as_str())
                .collect();
            Some((node["id"].as_str()?, deps))
        })
        .collect();
    let mut closures = BTreeMap::new();
    for (id, name) in &name_of {
        if !names.contains(name) {
            continue;
        }
        let mut seen = BTreeSet::new();
        let mut todo = vec![*id];
        while let Some(next) = todo.pop() {
            for dep in normal_deps.get(next).into_iter().flatten() {
                if seen.insert(*dep) {
                    todo.push(dep);
                }
            }
        }
        let crates = seen
            .iter()
            .filter_map(|id| name_of.get(id).map(|n| n.to_string()))
            .collect();
        closures.insert(name.to_string(), crates);
    }
    closures
}

/// `crate -> dep (kind)` for each dependency of `crates` that `forbidden` says is wrong.
fn violations(
    crates: &BTreeMap<String, Vec<Dep>>,
    forbidden: impl Fn(&str, &Dep) -> bool,
) -> Vec<String> {
    let mut found = Vec::new();
    for (name, deps) in crates {
        for dep in deps {
            if forbidden(name, dep) {
                let kind = dep.kind.as_deref().unwrap_or("normal");
                found.push(format!("{name} -> {} ({kind})", dep.name));
            }
        }
    }
    found
}

fn shipped(dep: &Dep) -> bool {
    dep.kind.as_deref() != Some("dev")
}

/// A pure crate that ships with (not only tests with) an I/O crate or an edge crate of Seam.
fn pure_on_io(name: &str, dep: &Dep) -> bool {
    PURE.contains(&name)
        && shipped(dep)
        && (IO_CRATES.contains(&dep.name.as_str())
            || (dep.name.starts_with("seam") && !PURE.contains(&dep.name.as_str())))
}

/// Netlink sockets outside seam-linux, or nf_tables messages outside seam-linux and seam-nft.
fn netlink_outside_linux(name: &str, dep: &Dep) -> bool {
    (NETLINK_SOCKETS.contains(&dep.name.as_str()) && name != "seam-linux")
        || (NETLINK_MESSAGES.contains(&dep.name.as_str())
            && name != "seam-linux"
            && name != "seam-nft")
}

/// A store library anywhere but in seam-store, tests included.
fn store_outside_seam_store(name: &str, dep: &Dep) -> bool {
    STORE_CRATES.contains(&dep.name.as_str()) && name != "seam-store"
}

#[test]
fn every_crate_has_a_place_in_the_direction() {
    let crates = workspace_crates();
    let unplaced: Vec<&String> = crates
        .keys()
        .filter(|c| !PURE.contains(&c.as_str()) && !EDGES.contains(&c.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "add these crates to PURE or EDGES (and to ARCHITECTURE.md's code map): {unplaced:?}"
    );
    for pure in ["seam-model", "seam-policy", "seam-firewall", "seam-nft"] {
        assert!(
            crates.contains_key(pure),
            "{pure} is not in the workspace any more"
        );
    }
}

#[test]
fn pure_crates_depend_on_nothing_that_does_io() {
    let crates = workspace_crates();
    let found = violations(&crates, pure_on_io);
    assert!(found.is_empty(), "pure crates depend on I/O: {found:#?}");
}

#[test]
fn pure_crates_pull_in_no_io_through_other_crates() {
    let closures = shipped_closure(PURE);
    assert!(
        closures.contains_key("seam-policy"),
        "the resolved graph lists no pure crate"
    );
    let found: Vec<String> = closures
        .iter()
        .flat_map(|(name, crates)| {
            crates
                .iter()
                .filter(|c| IO_CRATES.contains(&c.as_str()) || STORE_CRATES.contains(&c.as_str()))
                .map(move |c| format!("{name} ships with {c}"))
        })
        .collect();
    assert!(found.is_empty(), "pure crates pull in I/O: {found:#?}");
}

#[test]
fn only_seam_linux_talks_netlink() {
    let crates = workspace_crates();
    let found = violations(&crates, netlink_outside_linux);
    assert!(found.is_empty(), "netlink outside seam-linux: {found:#?}");
}

#[test]
fn only_seam_store_opens_the_stores() {
    let crates = workspace_crates();
    let found = violations(&crates, store_outside_seam_store);
    assert!(
        found.is_empty(),
        "store libraries outside seam-store: {found:#?}"
    );
}

#[test]
fn the_checks_see_a_violation() {
    // Each rule must be able to fail: a made-up graph with one wrong edge per rule, and one
    // allowed edge (a test-only dependency of a pure crate).
    let dep = |name: &str, kind: Option<&str>| Dep {
        name: name.to_string(),
        kind: kind.map(str::to_string),
    };
    let mut crates = BTreeMap::new();
    crates.insert(
        "seam-policy".to_string(),
        vec![
            dep("tokio", None),
            dep("seam-linux", None),
            dep("tempfile", Some("dev")),
        ],
    );
    crates.insert(
        "seam-agent".to_string(),
        vec![dep("redb", Some("dev")), dep("rtnetlink", None)],
    );
    crates.insert(
        "seam-client".to_string(),
        vec![dep("netlink-packet-netfilter", None)],
    );
    assert_eq!(
        violations(&crates, pure_on_io),
        [
            "seam-policy -> tokio (normal)",
            "seam-policy -> seam-linux (normal)"
        ]
    );
    assert_eq!(
        violations(&crates, netlink_outside_linux),
        [
            "seam-agent -> rtnetlink (normal)",
            "seam-client -> netlink-packet-netfilter (normal)"
        ]
    );
    assert_eq!(
        violations(&crates, store_outside_seam_store),
        ["seam-agent -> redb (dev)"]
    );
}
