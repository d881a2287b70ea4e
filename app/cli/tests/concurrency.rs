//! Several capsa processes on one store at once.

mod common;
use common::*;

#[test]
fn parallel_pulls_tags_and_removals_keep_the_store_consistent() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    let c = Capsa::new();
    let images = [
        "busybox:latest",
        "layers:latest",
        "compress:gzip",
        "compress:zstd",
        "busybox:v2s2",
        "multiarch:latest",
    ];
    // Tried: six pulls at once, sharing layers, into one empty store.
    let children: Vec<_> = images
        .iter()
        .map(|i| {
            c.cmd(&["pull", "-q", &format!("{reg}/{i}")])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut ch in children {
        assert!(ch.wait().unwrap().success());
    }
    assert_eq!(
        c.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .lines()
            .count(),
        images.len()
    );
    // Tried: tagging and removing at once: 10 tags in parallel with an rmi of another image.
    let mut children: Vec<_> = (0..10)
        .map(|n| {
            c.cmd(&["tag", &format!("{reg}/busybox:latest"), &format!("t{n}")])
                .spawn()
                .unwrap()
        })
        .collect();
    children.push(
        c.cmd(&["rmi", &format!("{reg}/layers:latest")])
            .spawn()
            .unwrap(),
    );
    for mut ch in children {
        assert!(ch.wait().unwrap().success());
    }
    let names = c.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for n in 0..10 {
        assert!(
            names.contains(&format!("localhost/t{n}:latest")),
            "tag t{n} kept: {names}"
        );
    }
    assert!(!names.contains("layers"));
    // Every remaining image still has its layers on disk.
    for line in c.ok(&["images", "-q", "--no-trunc"]).lines() {
        for d in c.layer_dirs(line.trim_start_matches("sha256:")) {
            assert!(d.is_dir(), "{} missing", d.display());
        }
    }
}
