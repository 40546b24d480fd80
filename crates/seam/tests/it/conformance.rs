//! `seam conformance netpol` over the project's copy of the shared cases.

use std::process::Command;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../seam-policy/test_data/netpol"
);

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_seam"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn netpol_cases_all_pass() {
    let cases = format!("{DATA}/cases.json");
    let (ok, stdout, stderr) = run(&["conformance", "netpol", "--cases", &cases]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().last(),
        Some("113 passed, 0 failed"),
        "{stdout}"
    );
}

#[test]
fn anp_cases_are_detected_and_pass() {
    let cases = format!("{DATA}/anp_cases.json");
    let model = format!("{DATA}/model.json");
    let (ok, stdout, stderr) = run(&[
        "conformance",
        "netpol",
        "--cases",
        &cases,
        "--model",
        &model,
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().last(),
        Some("17 passed, 0 failed"),
        "{stdout}"
    );
}

#[test]
fn a_failing_case_is_listed_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(format!("{DATA}/anp_cases.json")).unwrap();
    let mut cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    let want = &mut cases[1]["probes"][0]["expected"];
    *want = serde_json::Value::Bool(!want.as_bool().unwrap());
    std::fs::write(dir.path().join("cases.json"), cases.to_string()).unwrap();
    std::fs::copy(format!("{DATA}/model.json"), dir.path().join("model.json")).unwrap();
    let path = dir.path().join("cases.json");
    let (ok, stdout, _) = run(&["conformance", "netpol", "--cases", path.to_str().unwrap()]);
    assert!(!ok);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("FAIL "), "{stdout}");
    assert_eq!(lines[1], "16 passed, 1 failed");
}

/// Malformed cases are refused before a lab is built (the dataplane run itself needs root and
/// lives in tests/e2e).
#[test]
fn dataplane_mode_checks_the_cases_before_building_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.json");
    std::fs::write(
        &path,
        r#"[{"id": "x", "policies": [], "probe": {"port": 80}}]"#,
    )
    .unwrap();
    std::fs::copy(format!("{DATA}/model.json"), dir.path().join("model.json")).unwrap();
    let (ok, _, stderr) = run(&[
        "conformance",
        "netpol",
        "--dataplane",
        "--lab-name",
        "never-built",
        "--cases",
        path.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("cases: "), "{stderr}");
    assert!(!std::path::Path::new("/run/seam-lab/never-built").exists());
}
