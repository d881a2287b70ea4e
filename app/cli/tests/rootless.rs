//! Rootless: the store belongs to an unprivileged user; layer owners are mapped into
//! that user's subordinate id range by a user namespace.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;

fn subid_start(user: &str) -> u32 {
    let text = std::fs::read_to_string("/etc/subuid").unwrap();
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == user).then(|| f[1].parse().unwrap())
        })
        .expect("the test user has subuids")
}

#[test]
fn rootless_pull_maps_owners_into_subuids() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    let user = need!("CAPSA_TEST_ROOTLESS_USER");
    if !is_root() {
        eprintln!("SKIP rootless_pull_maps_owners_into_subuids: needs root to switch to {user}");
        return;
    }
    let c = Capsa::rootless(&user);
    let name = format!("{reg}/layers:latest");
    c.ok(&["pull", "-q", &name]);
    c.ok(&["pull", "-q", &format!("{reg}/busybox:latest")]);
    assert_eq!(c.image_count(), 2);
    let base = subid_start(&user);
    let uid = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().uid();
    let dirs = c.layer_dirs(&name);
    // Files owned by root in the image belong to the user; uid 1000 to subuid start + 999.
    let user_uid = uid(c.path());
    let any_root_file = dirs
        .iter()
        .map(|d| d.join("etc/passwd"))
        .find(|p| p.exists())
        .unwrap();
    assert_eq!(uid(&any_root_file), user_uid);
    let owned = dirs.iter().map(|d| d.join("data/sub")).find(|p| p.exists());
    let expected =
        std::fs::read_to_string(format!("{}/layers.expected", need!("CAPSA_TEST_FIXTURES")))
            .unwrap();
    for line in expected.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[3] == "0" {
            continue;
        }
        let inner: u32 = f[3].parse().unwrap();
        let path = dirs
            .iter()
            .rev()
            .map(|d| d.join(f[0].trim_start_matches('/')))
            .find(|p| std::fs::symlink_metadata(p).is_ok());
        if let Some(p) = path {
            assert_eq!(uid(&p), base + inner - 1, "{line}: mapped owner");
        }
    }
    let _ = owned;
    c.ok(&["rmi", "-a"]);
    assert_eq!(c.image_count(), 0);
}
