//! A real QEMU guest (software emulation, `-nographic`) on a hypervisor host of the lab, attached
//! by tap, pings a pod on another node. The guest is the host's kernel (`/boot/vmlinuz-*`, or
//! `SEAM_VM_KERNEL`) with a tiny initramfs this test builds from busybox-static (plus the
//! kernel's virtio-net modules when they are modules). Without a kernel image on the machine the
//! test fails and says so: it never passes by skipping.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use seam_e2e::{seam, LabGuard, TestLab};

/// The kernel to boot and its version (`vmlinuz-<version>`).
fn kernel() -> (PathBuf, String) {
    if let Some(k) = std::env::var_os("SEAM_VM_KERNEL") {
        let path = PathBuf::from(k);
        let version = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .unwrap_or_default()
            .to_string();
        return (path, version);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("vmlinuz-"))
            && std::fs::File::open(p).is_ok()
    });
    found.sort();
    let Some(path) = found.pop() else {
        panic!(
            "no readable kernel image on this machine (/boot/vmlinuz-* is missing; install a \
             distribution kernel, e.g. apt-get install linux-image-amd64, or set SEAM_VM_KERNEL): \
             the QEMU guest cannot boot"
        );
    };
    let version = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    (path, version)
}

/// Copies the virtio-net modules of kernel `version` (when they are modules) into `root`,
/// uncompressed, in load order; returns their names.
fn modules(kernel: &Path, version: &str, root: &Path) -> Vec<String> {
    // A kernel unpacked from its Debian package (scripts/setup.sh does that on machines without
    // one in /boot) keeps its modules beside it: <root>/boot/vmlinuz-V, <root>/lib/modules/V.
    let unpacked = kernel
        .parent()
        .and_then(Path::parent)
        .map(|r| r.join("lib/modules").join(version))
        .filter(|d| d.is_dir());
    let base = unpacked
        .unwrap_or_else(|| PathBuf::from("/lib/modules").join(version))
        .join("kernel");
    let mut loaded = Vec::new();
    for rel in [
        "net/core/failover",
        "drivers/net/net_failover",
        // virtio_ring first: virtio uses its symbols (no modprobe in the guest to sort them).
        "drivers/virtio/virtio_ring",
        "drivers/virtio/virtio",
        "drivers/virtio/virtio_pci_modern_dev",
        "drivers/virtio/virtio_pci_legacy_dev",
        "drivers/virtio/virtio_pci",
        "drivers/net/virtio_net",
    ] {
        for ext in ["ko", "ko.xz", "ko.zst"] {
            let src = base.join(format!("{rel}.{ext}"));
            if !src.exists() {
                continue;
            }
            let name = format!("{}.ko", rel.rsplit('/').next().unwrap());
            let dst = root.join(&name);
            let status = match ext {
                "ko" => Command::new("cp").arg(&src).arg(&dst).status(),
                "ko.xz" => Command::new("sh")
                    .arg("-c")
                    .arg(format!("xz -dc {} > {}", src.display(), dst.display()))
                    .status(),
                _ => Command::new("sh")
                    .arg("-c")
                    .arg(format!("zstd -dc {} > {}", src.display(), dst.display()))
                    .status(),
            };
            assert!(status.unwrap().success(), "unpack {}", src.display());
            loaded.push(name);
        }
    }
    loaded
}

/// An initramfs whose /init configures eth0 and pings `target` up to 60 times, printing
/// SEAM-PING-OK on the first reply, then powers off.
fn initramfs(
    dir: &Path,
    kernel: &Path,
    version: &str,
    ip: &str,
    prefix: u8,
    gw: &str,
    target: &str,
) -> PathBuf {
    let root = dir.join("root");
    for d in ["bin", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is installed (scripts/setup.sh)");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    let mods = modules(kernel, version, &root);
    let insmods: String = mods
        .iter()
        .map(|m| format!("insmod /{m} || echo SEAM-INSMOD-FAILED {m}\n"))
        .collect();
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmount -t proc proc /proc\nmount -t sysfs sys /sys\n{insmods}\
         ip link set lo up\nip link set eth0 mtu 1450 up\nip addr add {ip}/{prefix} dev eth0\nip route add default via {gw}\n\
         i=0\nwhile [ $i -lt 60 ]; do\n  if ping -c1 -W1 {target} >/dev/null 2>&1; then echo SEAM-PING-OK; break; fi\n  i=$((i+1))\ndone\n\
         echo SEAM-GUEST-DONE\npoweroff -f\n"
    );
    let init_path = root.join("init");
    std::fs::write(&init_path, init).unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&init_path)
        .status()
        .unwrap();
    let image = dir.join("initramfs.cpio.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > {}",
            root.display(),
            image.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "building the initramfs failed");
    image
}

#[test]
#[ignore = "privileged: netns, QEMU"]
fn a_qemu_guest_attached_by_tap_pings_a_pod() {
    let (kernel, version) = kernel();
    let qemu = "qemu-system-x86_64";
    assert!(
        Command::new(qemu).arg("--version").output().is_ok(),
        "{qemu} is not installed (Debian package qemu-system-x86, see scripts/setup.sh)"
    );
    let mut g = LabGuard::up("e2e-qemu", 2, &[]);
    g.lab.topology().make_hypervisor("n2").unwrap();
    let web = g.lab.workloads().add_pod("n1", "blue", "web").unwrap();
    let out = seam(
        &g.lab,
        &[
            "vm",
            "attach",
            "guest",
            "--segment",
            "ns-blue",
            "--host",
            "n2",
            "--json",
        ],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    let vm: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let segs = seam_e2e::controller(&g.lab, async |c| c.list_segments().await);
    let seg = segs.iter().find(|s| s.name == "ns-blue").unwrap();
    let dir = g.lab.dir.join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let image = initramfs(
        &dir,
        &kernel,
        &version,
        vm["ip"].as_str().unwrap(),
        seg.subnet.prefix_len(),
        &seg.gateway.to_string(),
        &web.ip.to_string(),
    );
    // QEMU creates the tap named as Seam names the VM's port, in the hypervisor's namespace;
    // the agent plugs it into the segment.
    let n2 = g.node("n2");
    let child = Command::new("ip")
        .args(["netns", "exec", &n2.netns, qemu])
        .args(["-nographic", "-no-reboot", "-m", "256", "-smp", "1"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&image)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .arg("-netdev")
        .arg(format!(
            "tap,id=n0,ifname={},script=no,downscript=no",
            vm["port"].as_str().unwrap()
        ))
        .arg("-device")
        .arg(format!(
            "virtio-net-pci,netdev=n0,mac={}",
            vm["mac"].as_str().unwrap()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // A watchdog: software emulation boots slowly, but not forever.
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(240));
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    });
    let output = child.wait_with_output().unwrap();
    drop(watchdog);
    let console = String::from_utf8_lossy(&output.stdout);
    assert!(
        console.contains("SEAM-PING-OK"),
        "the guest did not get an echo reply from the pod {}; console:\n{console}\nstderr: {}",
        web.ip,
        String::from_utf8_lossy(&output.stderr)
    );
}
