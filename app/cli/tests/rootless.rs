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

/// A layer holding a character device: made as root, skipped with a warning rootless.
#[test]
fn device_nodes_are_skipped_rootless() {
    let user = need!("CAPSA_TEST_ROOTLESS_USER");
    if !is_root() {
        eprintln!("SKIP device_nodes_are_skipped_rootless: needs root to switch to {user}");
        return;
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Char);
    h.set_path("dev/null").unwrap();
    h.set_mode(0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path("etc/os-release").unwrap();
    h.set_mode(0o644);
    h.set_size(3);
    h.set_cksum();
    b.append(&h, &b"x=1"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let fake = common::fake::Fake::start();
    let d = common::fake::sha(&tar);
    fake.image(
        "dev",
        "latest",
        &tar,
        &tar,
        "application/vnd.oci.image.layer.v1.tar",
        &d,
    );
    let name = format!("{}/dev:latest", fake.addr);

    let c = Capsa::rootless(&user);
    let out = c.run(&["pull", "--tls-verify=false", &name]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("skipping device node dev/null"),
        "{}",
        stderr(&out)
    );
    let top = c.layer_dirs(&name).pop().unwrap();
    assert!(top.join("etc/os-release").exists());
    assert!(!top.join("dev/null").exists());

    let r = Capsa::new();
    r.ok(&["pull", "-q", "--tls-verify=false", &name]);
    let top = r.layer_dirs(&name).pop().unwrap();
    let m = std::fs::symlink_metadata(top.join("dev/null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &m.file_type()
    ));
    assert_eq!(m.rdev(), libc_makedev(1, 3));
}

fn libc_makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfffff000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffffff00) << 12)
        | (minor & 0xff)
}
