//! Bad input: each test says what it tried; each expects exit code 125, a clear
//! message, and nothing stored (no image visible, nothing written outside the store).

mod common;
use common::fake::{Fake, Reply, gz_tar, sha};
use common::*;
use std::time::Duration;

const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn no_image(c: &Capsa) {
    assert_eq!(c.image_count(), 0, "nothing half-stored");
    c.assert_only_store_written();
}

fn with_fake(fake: &Fake) -> Capsa {
    let c = Capsa::new();
    let conf = format!(
        "unqualified-search-registries = []\n[[registry]]\nlocation = {:?}\ninsecure = true\n",
        fake.addr
    );
    std::fs::write(c.path().join("registries.conf"), conf).unwrap();
    c
}

#[test]
fn malformed_references_are_refused() {
    let c = Capsa::new();
    for bad in [
        "Busybox",
        "busybox:",
        "busybox@",
        "a b",
        "localhost:5000/x@sha256:short",
        "-x",
        "UPPER/case:1",
    ] {
        // Tried: pulling a name that does not parse.
        let err = c.fails(&["pull", bad], 125);
        assert!(
            err.contains("invalid reference format") || err.contains("unexpected argument"),
            "{bad}: {err}"
        );
    }
    no_image(&c);
}

#[test]
fn registry_down() {
    // Tried: a registry address where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Capsa::new();
    let err = c.fails(
        &[
            "pull",
            "--tls-verify=false",
            &format!("127.0.0.1:{port}/x:1"),
        ],
        125,
    );
    assert!(
        err.contains("pinging registry") || err.contains("127.0.0.1"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    no_image(&c);
}

#[test]
fn registry_error_statuses() {
    // Tried: a registry answering 401 (no challenge), 403, 404, 429 and 500 to the manifest.
    let fake = Fake::start();
    for (code, text) in [
        (401, "authentication required"),
        (403, "access denied"),
        (404, "not found"),
        (429, "too many requests"),
        (500, "500"),
    ] {
        fake.route(
            &format!("/v2/s{code}/manifests/latest"),
            Reply::new(
                code,
                "{\"errors\":[{\"code\":\"X\",\"message\":\"said no\"}]}",
            ),
        );
        let c = with_fake(&fake);
        let err = c.fails(&["pull", &format!("{}/s{code}", fake.addr)], 125);
        assert!(err.to_lowercase().contains(text), "{code}: {err}");
        no_image(&c);
    }
}

#[test]
fn slow_registry_times_out() {
    // Tried: a registry that stalls for longer than the read timeout.
    let fake = Fake::start();
    let mut r = Reply::new(200, "{}");
    r.delay = Duration::from_secs(4);
    fake.route("/v2/slow/manifests/latest", r);
    let mut c = with_fake(&fake);
    c.extra_env
        .push(("CAPSA_REGISTRY_TIMEOUT".into(), "1".into()));
    let err = c.fails(&["pull", &format!("{}/slow", fake.addr)], 125);
    assert!(
        err.contains("timed out") || err.contains("timeout") || err.contains("operation"),
        "{err}"
    );
    no_image(&c);
}

#[test]
fn manifest_over_4_mib_is_refused() {
    // Tried: a 5 MiB manifest.
    let fake = Fake::start();
    let big = format!(
        "{{\"schemaVersion\":2,\"pad\":\"{}\"}}",
        "x".repeat(5 << 20)
    );
    fake.route("/v2/big/manifests/latest", Reply::new(200, big));
    let c = with_fake(&fake);
    let err = c.fails(&["pull", &format!("{}/big", fake.addr)], 125);
    assert!(err.contains("larger than the 4194304 byte limit"), "{err}");
    no_image(&c);
}

#[test]
fn blob_digest_mismatch_is_refused() {
    // Tried: a layer whose bytes do not hash to the manifest's digest.
    let fake = Fake::start();
    let (good, diff) = gz_tar(&[("etc/x", b"x")]);
    let (evil, _) = gz_tar(&[("etc/x", b"evil")]);
    fake.image("mismatch", "latest", &good, &evil, GZ, &diff);
    let c = with_fake(&fake);
    let err = c.fails(&["pull", &format!("{}/mismatch", fake.addr)], 125);
    assert!(
        err.contains("digest mismatch") || err.contains("bytes, but the manifest says"),
        "{err}"
    );
    no_image(&c);
    assert_eq!(
        std::fs::read_dir(c.root().join("layers/overlay"))
            .unwrap()
            .count(),
        0,
        "no layer kept"
    );
}

#[test]
fn diff_id_mismatch_is_refused() {
    // Tried: a config whose diff ID does not match the uncompressed layer.
    let fake = Fake::start();
    let (good, _) = gz_tar(&[("etc/x", b"x")]);
    fake.image(
        "diffid",
        "latest",
        &good,
        &good,
        GZ,
        &sha(b"something else"),
    );
    let c = with_fake(&fake);
    let err = c.fails(&["pull", &format!("{}/diffid", fake.addr)], 125);
    assert!(err.contains("diff ID"), "{err}");
    no_image(&c);
}

#[test]
fn truncated_gzip_is_refused() {
    // Tried: a gzip layer cut in half (served whole, digest computed on the cut bytes).
    let fake = Fake::start();
    let (good, diff) = gz_tar(&[("etc/big", &[7u8; 200_000])]);
    let cut = good[..good.len() / 2].to_vec();
    fake.image("trunc", "latest", &cut, &cut, GZ, &diff);
    let c = with_fake(&fake);
    let err = c.fails(&["pull", &format!("{}/trunc", fake.addr)], 125);
    assert!(err.contains("layer sha256:"), "{err}");
    no_image(&c);
}

#[test]
fn unknown_media_types_are_refused() {
    // Tried: a layer media type no one knows, and a manifest media type no one knows.
    let fake = Fake::start();
    let (good, diff) = gz_tar(&[("etc/x", b"x")]);
    fake.image(
        "weird",
        "latest",
        &good,
        &good,
        "application/x-weird",
        &diff,
    );
    fake.route(
        "/v2/weirder/manifests/latest",
        Reply::new(
            200,
            "{\"schemaVersion\":2,\"mediaType\":\"application/x-unknown\"}",
        )
        .header("Content-Type", "application/x-unknown"),
    );
    let c = with_fake(&fake);
    let err = c.fails(&["pull", &format!("{}/weird", fake.addr)], 125);
    assert!(err.contains("unknown layer media type"), "{err}");
    let err = c.fails(&["pull", &format!("{}/weirder", fake.addr)], 125);
    assert!(err.contains("unknown media type"), "{err}");
    no_image(&c);
}

/// A layer tarball with hostile entries, served by the fake registry.
fn hostile(name: &str, build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    let tar = b.into_inner().unwrap();
    let fake = Fake::start();
    let d = sha(&tar);
    fake.image(
        name,
        "latest",
        &tar,
        &tar,
        "application/vnd.oci.image.layer.v1.tar",
        &d,
    );
    let outside = tempfile::tempdir().unwrap();
    let c = with_fake(&fake);
    let err = c.fails(&["pull", &format!("{}/{name}", fake.addr)], 125);
    assert!(
        err.contains("leads out of the layer")
            || err.contains("absolute path")
            || err.contains("'..'"),
        "{name}: {err}"
    );
    no_image(&c);
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

fn raw(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name.as_bytes());
        g.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[test]
fn hostile_layer_dotdot() {
    // Tried: an entry named ../../escaped.
    hostile("dotdot", |b| {
        raw(b, tar::EntryType::Regular, "../../escaped", "", b"x")
    });
}

#[test]
fn hostile_layer_absolute_path() {
    // Tried: an entry named /tmp/capsa-escaped.
    hostile("abs", |b| {
        raw(b, tar::EntryType::Regular, "/tmp/capsa-escaped", "", b"x")
    });
    assert!(!std::path::Path::new("/tmp/capsa-escaped").exists());
}

#[test]
fn hostile_layer_symlink_then_write_through_it() {
    // Tried: a -> /etc, then a/passwd (would overwrite the host's /etc/passwd).
    let before = std::fs::read("/etc/passwd").unwrap();
    hostile("symlink", |b| {
        raw(b, tar::EntryType::Symlink, "a", "/etc", b"");
        raw(b, tar::EntryType::Regular, "a/passwd", "", b"pwned");
    });
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), before);
}

#[test]
fn hostile_layer_hardlink_out() {
    // Tried: a hard link to ../../../etc/shadow.
    hostile("hardlink", |b| {
        raw(b, tar::EntryType::Link, "h", "../../../etc/shadow", b"")
    });
}

#[test]
fn malformed_archives_are_refused() {
    let c = Capsa::new();
    let w = c.path().join("work");
    std::fs::create_dir(&w).unwrap();
    // Tried: loading a file that is not a tarball.
    std::fs::write(w.join("junk.tar"), b"this is not a tar archive at all").unwrap();
    let err = c.fails(&["load", "-i", w.join("junk.tar").to_str().unwrap()], 125);
    assert!(
        err.contains("archive") || err.contains("manifest.json"),
        "{err}"
    );
    // Tried: a docker-archive whose manifest.json names a layer that escapes.
    let mut b = tar::Builder::new(Vec::new());
    let manifest = br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["../../etc/passwd"]}]"#;
    raw(
        &mut b,
        tar::EntryType::Regular,
        "manifest.json",
        "",
        manifest,
    );
    raw(&mut b, tar::EntryType::Regular, "c.json", "", br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#);
    std::fs::write(w.join("escape.tar"), b.into_inner().unwrap()).unwrap();
    let err = c.fails(&["load", "-i", w.join("escape.tar").to_str().unwrap()], 125);
    assert!(err.contains("leads out of the archive"), "{err}");
    // Tried: an OCI layout whose blob does not match its digest.
    let oci = w.join("oci");
    std::fs::create_dir_all(oci.join("blobs/sha256")).unwrap();
    let fake_digest = sha(b"the real manifest");
    std::fs::write(
        oci.join("blobs/sha256").join(&fake_digest[7..]),
        b"{\"tampered\":true}",
    )
    .unwrap();
    std::fs::write(oci.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        oci.join("index.json"),
        format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{fake_digest}","size":17}}]}}"#),
    )
    .unwrap();
    let err = c.fails(&["load", "-i", oci.to_str().unwrap()], 125);
    assert!(err.contains("digest mismatch"), "{err}");
    // Tried: importing something that is not a tarball.
    let err = c.fails(&["import", w.join("junk.tar").to_str().unwrap()], 125);
    assert!(err.contains("tar"), "{err}");
    assert_eq!(c.image_count(), 0);
}

#[test]
fn killed_pull_leaves_nothing_and_next_pull_succeeds() {
    // Tried: SIGKILL while a layer is half downloaded, then the same pull again.
    let fake = Fake::start();
    let (good, diff) = gz_tar(&[("etc/big", &vec![3u8; 2_000_000])]);
    let layer = fake.image("killme", "latest", &good, &good, GZ, &diff);
    let mut stalled = Reply::new(200, good.clone());
    stalled.delay = Duration::from_millis(200);
    stalled.stall_midway = true;
    fake.route(&format!("/v2/killme/blobs/{layer}"), stalled);
    let c = with_fake(&fake);
    let mut child = c
        .cmd(&["pull", &format!("{}/killme", fake.addr)])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    no_image(&c);
    assert_eq!(
        std::fs::read_dir(c.root().join("layers/overlay"))
            .unwrap()
            .count(),
        0,
        "no half layer visible"
    );
    fake.route(&format!("/v2/killme/blobs/{layer}"), Reply::new(200, good));
    c.ok(&["pull", &format!("{}/killme", fake.addr)]);
    assert_eq!(c.image_count(), 1);
    let left: Vec<_> = std::fs::read_dir(c.root().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left.len(),
        0,
        "leftovers of the killed pull were collected: {left:?}"
    );
}

#[test]
fn full_disk_fails_cleanly() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    if !is_root() {
        eprintln!("SKIP full_disk_fails_cleanly: mounting a small tmpfs needs root");
        return;
    }
    // Tried: pulling a ~2 MB image into a store on a 1 MiB filesystem.
    let c = Capsa::new();
    let root = c.root();
    std::fs::create_dir_all(&root).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(root.clone());
    let err = c.fails(&["pull", &format!("{reg}/busybox:latest")], 125);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("hint:") && err.contains("full"), "{err}");
    assert_eq!(c.image_count(), 0, "nothing half-stored");
    // Once there is room again, the same pull succeeds.
    let st = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    c.ok(&["pull", "-q", &format!("{reg}/busybox:latest")]);
    assert_eq!(c.image_count(), 1);
}
