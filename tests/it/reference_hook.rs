//! scripts/reference-hook.sh (the plain-bash hook the benchmark measures coral-nfd
//! against) applies the same rules: both print the same label lines on every fixture.

use crate::util::*;
use std::process::Command;

fn label_lines(feature_file: &str) -> Vec<String> {
    parse_nfd(feature_file)
        .unwrap()
        .into_iter()
        .filter(|l| !l.no_label)
        .map(|l| format!("{}={}", l.key, l.value))
        .collect()
}

#[test]
fn reference_hook_agrees_on_every_fixture() {
    let hook = fixtures_dir().join("../../scripts/reference-hook.sh");
    for name in scenarios() {
        let Some(dev) = fixture_dev_root(&name) else {
            continue;
        };
        let sys = fixtures_dir().join(&name).join("sys");
        let ours = run(&[
            "--sysfs-root",
            sys.to_str().unwrap(),
            "--dev-root",
            dev.path().to_str().unwrap(),
        ]);
        let theirs = Command::new("bash")
            .arg(&hook)
            .env("CORAL_NFD_SYSFS_ROOT", &sys)
            .env("CORAL_NFD_DEV_ROOT", dev.path())
            .output()
            .unwrap();
        assert!(
            theirs.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        let theirs = String::from_utf8(theirs.stdout).unwrap();
        assert_eq!(label_lines(&theirs), label_lines(&stdout(&ours)), "{name}");
    }
}
