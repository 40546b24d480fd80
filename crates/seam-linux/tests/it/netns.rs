//! Seam's named namespaces and iproute2's live side by side under `/run/netns`, whichever made
//! the first one: every namespace can be deleted by either tool and none is left behind. Each
//! scenario runs in a mount namespace of its own with a fresh `/run` (as after boot), so it
//! starts from the same state every time and never touches the machine's `/run/netns`; the
//! namespaces it makes go away with that mount namespace, also when an assertion fails.

use std::process::Command;

use seam_linux::netns;

use crate::firewall::require_root;

/// `ip netns ARGS…`, which must succeed.
fn ip_netns(args: &[&str]) {
    let out = Command::new("ip").arg("netns").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip netns {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The names `ip netns list` shows (a line is `NAME` or `NAME (id: N)`).
fn ip_netns_list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success(), "ip netns list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// This thread's mounts as (mount point, optional fields such as `shared:N`).
fn mounts() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/thread-self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (head, _) = l.split_once(" - ")?;
            let fields: Vec<&str> = head.split(' ').collect();
            Some((fields.get(4)?.to_string(), fields[6..].join(" ")))
        })
        .collect()
}

/// Checks the namespace answers by name (`ip -n NAME`), as a user would reach it.
fn reachable(name: &str) {
    let out = Command::new("ip")
        .args(["-n", name, "link", "show", "lo"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip -n {name} link show lo: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `/run/netns` is a shared mount point, as `ip netns add` leaves it, so mounts under it
/// propagate to every mount namespace that shares it.
fn assert_run_netns_shared() {
    let run_netns: Vec<String> = mounts()
        .into_iter()
        .filter(|(at, _)| at == netns::NETNS_DIR)
        .map(|(_, tags)| tags)
        .collect();
    assert!(
        run_netns.iter().any(|tags| tags.contains("shared:")),
        "{} is not a shared mount point: {run_netns:?}",
        netns::NETNS_DIR
    );
}

/// Nothing of `names` is listed or still mounted.
fn assert_gone(names: &[&str]) {
    let listed = ip_netns_list();
    let mounted: Vec<String> = mounts().into_iter().map(|(at, _)| at).collect();
    for name in names {
        assert!(
            !listed.iter().any(|l| l == name),
            "{name} still in `ip netns list`: {listed:?}"
        );
        let path = netns::path_of(name).display().to_string();
        assert!(
            !mounted.contains(&path),
            "{path} still mounted: {mounted:?}"
        );
    }
}

#[test]
#[ignore = "privileged: mount and network namespaces"]
fn seam_first_then_iproute2() {
    require_root();
    let base = format!("snsa{}", std::process::id());
    let (seam_a, ip_x, seam_b) = (
        format!("{base}-s1"),
        format!("{base}-ip"),
        format!("{base}-s2"),
    );
    netns::with_private_run(|| {
        netns::create(&seam_a).unwrap();
        assert_run_netns_shared();
        // iproute2 finds /run/netns already set up and leaves it as it is.
        ip_netns(&["add", &ip_x]);
        netns::create(&seam_b).unwrap();
        for name in [&seam_a, &ip_x, &seam_b] {
            reachable(name);
        }
        netns::delete(&seam_a).unwrap();
        netns::delete(&seam_b).unwrap();
        ip_netns(&["del", &ip_x]);
        assert_gone(&[&seam_a, &ip_x, &seam_b]);
    })
    .unwrap();
}

#[test]
#[ignore = "privileged: mount and network namespaces"]
fn iproute2_first_then_seam() {
    require_root();
    let base = format!("snsb{}", std::process::id());
    let (ip_x, seam_a, ip_y, seam_b) = (
        format!("{base}-ip1"),
        format!("{base}-s1"),
        format!("{base}-ip2"),
        format!("{base}-s2"),
    );
    netns::with_private_run(|| {
        ip_netns(&["add", &ip_x]);
        netns::create(&seam_a).unwrap();
        ip_netns(&["add", &ip_y]);
        netns::create(&seam_b).unwrap();
        assert_run_netns_shared();
        for name in [&ip_x, &seam_a, &ip_y, &seam_b] {
            reachable(name);
        }
        // Each tool deletes the other's namespaces as well as its own.
        netns::delete(&ip_x).unwrap();
        ip_netns(&["del", &seam_a]);
        netns::delete(&seam_b).unwrap();
        ip_netns(&["del", &ip_y]);
        assert_gone(&[&ip_x, &seam_a, &ip_y, &seam_b]);
    })
    .unwrap();
}

#[test]
#[ignore = "privileged: mount and network namespaces"]
fn private_run_leaves_the_machine_alone() {
    require_root();
    let name = format!("snsc{}", std::process::id());
    netns::with_private_run(|| {
        netns::create(&name).unwrap();
        reachable(&name);
    })
    .unwrap();
    // Neither the namespace nor its mount was ever visible outside.
    assert!(!netns::list().contains(&name));
    assert!(!netns::path_of(&name).exists());
}

#[test]
#[ignore = "privileged: mount and network namespaces"]
fn a_namespace_covered_by_a_later_mount_is_refused_clearly() {
    require_root();
    let base = format!("snsd{}", std::process::id());
    let (legacy, ip_x) = (format!("{base}-old"), format!("{base}-ip"));
    netns::with_private_run(|| {
        // What a tool that mounts on the bare directory leaves (as Seam did before it set
        // /run/netns up): then iproute2's bind of the directory covers that mount.
        std::fs::create_dir_all(netns::NETNS_DIR).unwrap();
        let path = netns::path_of(&legacy);
        std::fs::File::create(&path).unwrap();
        let out = Command::new("unshare")
            .arg(format!("--net={}", path.display()))
            .arg("true")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "unshare --net: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        ip_netns(&["add", &ip_x]);
        let refused = netns::delete(&legacy).unwrap_err().to_string();
        assert!(
            refused.contains(&legacy) && refused.contains("mounted underneath"),
            "unclear refusal: {refused}"
        );
        // The namespaces made since are not affected.
        netns::delete(&ip_x).unwrap();
        assert_gone(&[&ip_x]);
    })
    .unwrap();
}
