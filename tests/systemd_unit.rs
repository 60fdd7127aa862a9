//! The shipped unit file: `systemd-analyze verify` accepts it, and its sandboxing scores 2.0 or
//! lower ("OK") in `systemd-analyze security --offline=yes`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::Command;

fn unit_with_this_binary(dir: &std::path::Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/paywatch.service"
    ))
    .expect("unit");
    let unit = unit.replace("/usr/local/bin/paywatch", common::BIN);
    let path = dir.join("paywatch.service");
    std::fs::write(&path, unit).expect("write");
    path
}

#[test]
fn the_unit_verifies_and_is_well_sandboxed() {
    let analyze = "systemd-analyze";
    assert!(
        Command::new(analyze)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: run scripts/test (it installs systemd)"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let unit = unit_with_this_binary(dir.path());
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("verify");
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(analyze)
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .expect("security");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for paywatch.service:")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}
