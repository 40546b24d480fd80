//! The contract suites of `seam_dataplane::contract`, the same functions the in-memory fake
//! passes on every `cargo test`, against [`LinuxKernel`] in a fresh network namespace each.

use std::future::Future;
use std::net::Ipv4Addr;
use std::process::Command;

use seam_dataplane::{contract, Underlay};
use seam_linux::{netns, LinuxKernel};

use crate::firewall::require_root;

/// A uniquely named namespace, deleted on drop (also after a failed check).
pub(crate) struct Ns(pub(crate) String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = netns::delete(&self.0);
    }
}

pub(crate) fn ip_in(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip -n {ns} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `check` on a kernel connection opened inside a new namespace, on a thread of its own
/// that stays there (so `nft` children and blocking threads start inside it too). `setup` is
/// `ip` commands run in the namespace first.
pub(crate) fn in_fresh_netns<F, Fut>(tag: &str, setup: &[&[&str]], check: F)
where
    F: FnOnce(LinuxKernel) -> Fut + Send,
    Fut: Future<Output = ()>,
{
    require_root();
    let ns = Ns(format!("sct{}{tag}", std::process::id()));
    netns::create(&ns.0).unwrap();
    for args in setup {
        ip_in(&ns.0, args);
    }
    netns::run_in(&netns::path_of(&ns.0), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let kernel = LinuxKernel::connect().unwrap();
            check(kernel).await;
        });
    })
    .unwrap();
}

#[test]
#[ignore = "privileged: netns"]
fn absent_tables_list_as_none() {
    in_fresh_netns("a", &[], |k| async move {
        contract::absent_tables_list_as_none(&k).await
    });
}

#[test]
#[ignore = "privileged: netns"]
fn a_table_written_whole_lists_as_written() {
    in_fresh_netns("w", &[], |k| async move {
        contract::a_table_written_whole_lists_as_written(&k).await
    });
}

#[test]
#[ignore = "privileged: netns"]
fn a_table_without_endpoints_lists_empty_maps() {
    in_fresh_netns("e", &[], |k| async move {
        contract::a_table_without_endpoints_lists_empty_maps(&k).await
    });
}

#[test]
#[ignore = "privileged: netns"]
fn a_delta_changes_what_the_table_lists() {
    in_fresh_netns("d", &[], |k| async move {
        contract::a_delta_changes_what_the_table_lists(&k).await
    });
}

#[test]
#[ignore = "privileged: netns"]
fn the_nat_table_round_trips() {
    in_fresh_netns("n", &[], |k| async move {
        contract::the_nat_table_round_trips(&k).await
    });
}

#[test]
#[ignore = "privileged: netns"]
fn the_transit_is_observed_as_applied() {
    let underlay = Underlay {
        ifname: "u0".into(),
        ip: Ipv4Addr::new(198, 18, 0, 11),
        prefix_len: 24,
    };
    let setup: &[&[&str]] = &[
        // No dummy module here: a veth pair inside the namespace is the underlay.
        &["link", "add", "u0", "type", "veth", "peer", "name", "u1"],
        &["addr", "add", "198.18.0.11/24", "dev", "u0"],
        &["link", "set", "u1", "up"],
        &["link", "set", "u0", "up"],
    ];
    in_fresh_netns("t", setup, |k| async move {
        contract::the_transit_is_observed_as_applied(
            &k,
            contract::sample_transit(underlay),
            contract::sample_nat(0),
        )
        .await
    });
}

#[test]
#[ignore = "privileged: netns"]
fn a_new_underlay_address_rebinds_the_vxlan_devices() {
    let underlay = |last| Underlay {
        ifname: "u0".into(),
        ip: Ipv4Addr::new(198, 18, 0, last),
        prefix_len: 24,
    };
    let setup: &[&[&str]] = &[
        &["link", "add", "u0", "type", "veth", "peer", "name", "u1"],
        &["addr", "add", "198.18.0.11/24", "dev", "u0"],
        &["addr", "add", "198.18.0.12/24", "dev", "u0"],
        &["link", "set", "u1", "up"],
        &["link", "set", "u0", "up"],
    ];
    in_fresh_netns("u", setup, |k| async move {
        contract::a_new_underlay_address_rebinds_the_vxlan_devices(&k, underlay(11), underlay(12))
            .await
    });
}

#[test]
#[ignore = "privileged: netns"]
fn a_node_converges_and_attaches() {
    let underlay = Underlay {
        ifname: "u0".into(),
        ip: Ipv4Addr::new(198, 18, 0, 11),
        prefix_len: 24,
    };
    let sandbox = Ns(format!("sct{}p", std::process::id()));
    netns::create(&sandbox.0).unwrap();
    let sandbox_path = netns::path_of(&sandbox.0).display().to_string();
    let setup: &[&[&str]] = &[
        &["link", "add", "u0", "type", "veth", "peer", "name", "u1"],
        &["addr", "add", "198.18.0.11/24", "dev", "u0"],
        &["link", "set", "u1", "up"],
        &["link", "set", "u0", "up"],
    ];
    in_fresh_netns("k", setup, |k| async move {
        contract::a_node_converges_and_attaches(&k, contract::sample_node(underlay), &sandbox_path)
            .await
    });
}

#[test]
#[ignore = "privileged: netns"]
fn the_underlay_interface_reads_back() {
    let want = seam_dataplane::UnderlayInterface {
        // The kernel lists the primary addresses first, then the secondaries.
        addresses: vec![
            "198.18.0.11/24".parse().unwrap(),
            "192.0.2.5/28".parse().unwrap(),
            "198.18.0.12/24".parse().unwrap(),
        ],
        mac: Some(seam_model::MacAddr([2, 0, 0, 0, 0, 0x11])),
        mtu: 1400,
    };
    let setup: &[&[&str]] = &[
        &["link", "add", "u0", "type", "veth", "peer", "name", "u1"],
        &[
            "link",
            "set",
            "u0",
            "address",
            "02:00:00:00:00:11",
            "mtu",
            "1400",
        ],
        &["addr", "add", "198.18.0.11/24", "dev", "u0"],
        // A secondary address of the same subnet, and one of another.
        &["addr", "add", "198.18.0.12/24", "dev", "u0"],
        &["addr", "add", "192.0.2.5/28", "dev", "u0"],
        // Another interface's address is not u0's.
        &["addr", "add", "198.51.100.1/24", "dev", "u1"],
    ];
    in_fresh_netns("i", setup, |k| async move {
        contract::the_underlay_interface_reads_back(&k, "u0", &want).await
    });
}
