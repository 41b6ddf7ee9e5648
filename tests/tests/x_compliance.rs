//! `starling check --compliance`: the probe logs in to a real in-process server and reads
//! the requirements of XEP-0479 off what a client is shown.

use starling::compliance::{evaluate, probe, render};
use starling_core::Config;

#[tokio::test]
async fn the_probe_sees_what_the_default_build_offers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    // The probe replaces the data directory and the listeners with throwaway ones; the
    // operator's data directory must not even be created.
    config.server.data_dir = dir.path().join("operator-data");
    let seen = probe(&config).await.expect("probe runs");
    assert!(
        !config.server.data_dir.exists(),
        "the probe used the operator's data directory"
    );
    assert!(seen.starttls_login && seen.direct_tls_login);
    assert!(
        seen.mechanism.starts_with("SCRAM-SHA-256"),
        "{}",
        seen.mechanism
    );
    let rows = evaluate(&seen);
    let met = |providers: &str| {
        rows.iter()
            .find(|r| r.requirement.providers == providers)
            .unwrap_or_else(|| panic!("no row for {providers}"))
            .met
    };
    for p in [
        "RFC 6120, RFC 7622",
        "XEP-0114",
        "RFC 6121",
        "XEP-0368",
        "XEP-0030",
        "XEP-0115",
        "XEP-0163",
        "XEP-0280",
        "XEP-0191",
        "XEP-0045",
        "XEP-0363",
        "RFC 7395, XEP-0206",
        "XEP-0156",
        "XEP-0054",
        "XEP-0223",
        "XEP-0049",
        "XEP-0313",
        "XEP-0359",
        "XEP-0352",
        "XEP-0198",
        "XEP-0357",
        "XEP-0215",
    ] {
        assert!(met(p), "{p} not seen:\n{}", render(&rows));
    }
    let report = render(&rows);
    assert!(report.contains("Core suite, Core server:"), "{report}");
}

#[tokio::test]
async fn a_disabled_module_is_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.data_dir = dir.path().join("data");
    config.modules.disable = vec!["mam".into()];
    config.upload.enabled = false;
    let seen = probe(&config).await.expect("probe runs");
    let rows = evaluate(&seen);
    let mam = rows
        .iter()
        .find(|r| r.requirement.providers == "XEP-0313")
        .unwrap();
    assert!(!mam.met, "MAM reported although disabled");
    let upload = rows
        .iter()
        .find(|r| r.requirement.providers == "XEP-0363")
        .unwrap();
    assert!(!upload.met, "upload reported although disabled");
}
