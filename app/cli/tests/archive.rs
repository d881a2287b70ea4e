//! save/load in every format (files, directories, stdin/stdout), import, history.

mod common;
use common::*;
use std::process::Stdio;

#[test]
fn save_and_load_roundtrip_every_format() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    let c = Capsa::new();
    let name = format!("{reg}/layers:latest");
    let id = c.ok(&["pull", "-q", &name]).trim().to_string();
    let w = c.path().join("work");
    std::fs::create_dir(&w).unwrap();
    for (format, file) in [
        ("docker-archive", "d.tar"),
        ("oci-archive", "o.tar"),
        ("oci-dir", "odir"),
    ] {
        let out = w.join(file);
        c.ok(&[
            "save",
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
            &name,
        ]);
        let d = Capsa::with_driver("vfs");
        let loaded = d.ok(&["load", "-i", out.to_str().unwrap()]);
        assert!(loaded.contains("Loaded image:"), "{format}: {loaded}");
        assert_eq!(d.inspect(&name)["Id"], id, "{format} keeps the image ID");
        if format != "docker-archive" {
            // OCI layouts carry the manifest itself: its digest survives the round trip.
            assert_eq!(
                d.inspect(&name)["Digest"],
                c.inspect(&name)["Digest"],
                "{format}"
            );
        }
        let top = d.layer_dirs(&name).pop().unwrap();
        assert!(top.join("data/a").exists(), "{format}: layers unpacked");
        assert!(!top.join("data/b").exists(), "{format}: whiteouts applied");
    }
    // docker-archive to stdout and back from stdin.
    let mut save = c.cmd(&["save", &name]);
    save.stdout(Stdio::piped());
    let out = save.output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.len() > 1024);
    let d = Capsa::new();
    let mut load = d.cmd(&["load"]);
    load.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = load.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &out.stdout).unwrap();
    drop(child.stdin.take());
    let res = child.wait_with_output().unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(d.inspect(&name)["Id"], id);
    // The loaded image pushes like a pulled one.
    d.ok(&[
        "push",
        "-q",
        &name,
        &format!("{reg}/reloaded/layers:{}", std::process::id()),
    ]);
}

#[test]
fn import_rootfs_tarball_with_changes() {
    let c = Capsa::new();
    let w = c.path().join("work");
    std::fs::create_dir(&w).unwrap();
    let tarball = w.join("rootfs.tar.gz");
    let (gz, _) = common::fake::gz_tar(&[
        ("bin/hello", b"#!/bin/sh\necho hi\n"),
        ("etc/os-release", b"ID=test\n"),
    ]);
    std::fs::write(&tarball, gz).unwrap();
    let out = c.ok(&[
        "import",
        "--change",
        "CMD [\"/bin/hello\"]",
        "-c",
        "ENV FOO=bar",
        "-c",
        "LABEL a=b",
        "-m",
        "imported for a test",
        tarball.to_str().unwrap(),
        "imported:v1",
    ]);
    assert!(out.trim().starts_with("sha256:"), "{out}");
    let v = c.inspect("imported:v1");
    assert_eq!(v["RepoTags"][0], "localhost/imported:v1");
    assert_eq!(v["Config"]["Cmd"][0], "/bin/hello");
    assert_eq!(v["Config"]["Env"][0], "FOO=bar");
    assert_eq!(v["Labels"]["a"], "b");
    let top = c.layer_dirs("imported:v1").pop().unwrap();
    assert!(top.join("bin/hello").is_file());
    let hist = c.ok(&["history", "imported:v1"]);
    assert!(
        hist.lines().next().unwrap().contains("CREATED BY"),
        "{hist}"
    );
    assert!(hist.contains("imported for a test"), "{hist}");
    // Import from stdin, unnamed: a dangling image.
    let mut cmd = c.cmd(&["import", "-"]);
    cmd.stdin(std::fs::File::open(&tarball).unwrap());
    assert!(cmd.output().unwrap().status.success());
    assert_eq!(
        c.ok(&["images", "-q", "--filter", "dangling=true"])
            .lines()
            .count(),
        1
    );
}

#[test]
fn import_from_a_url() {
    let c = Capsa::new();
    let fake = common::fake::Fake::start();
    let (gz, _) = common::fake::gz_tar(&[("etc/hostname", b"from-url\n")]);
    fake.route("/rootfs.tar.gz", common::fake::Reply::new(200, gz));
    let url = format!("http://{}/rootfs.tar.gz", fake.addr);
    c.ok(&["import", "-q", &url, "fromurl:1"]);
    let top = c.layer_dirs("fromurl:1").pop().unwrap();
    assert_eq!(
        std::fs::read_to_string(top.join("etc/hostname")).unwrap(),
        "from-url\n"
    );
    // Tried: a URL that answers 404.
    let err = c.fails(
        &["import", &format!("http://{}/missing.tar", fake.addr)],
        125,
    );
    assert!(err.contains("404"), "{err}");
}
