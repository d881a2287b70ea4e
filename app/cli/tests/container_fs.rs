//! `cp`, `diff`, `export` and `commit` on containers run by crun from the fixture
//! registry's busybox. Every test runs twice: as root and as the unprivileged test user
//! (`CAPSA_TEST_ROOTLESS_USER`, with subuids), each with its own store.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The host directory the test copies to and from (owned by the user capsa runs as).
fn work(c: &Capsa) -> PathBuf {
    let w = c.path().join("work");
    std::fs::create_dir_all(&w).unwrap();
    std::fs::write(w.join("hello"), "hello from the host\n").unwrap();
    give(c, &w);
    w
}

/// Hands host files to the rootless user.
fn give(c: &Capsa, p: &Path) {
    if let Some(u) = &c.user {
        let st = Command::new("chown")
            .arg("-R")
            .arg(format!("{u}:"))
            .arg(p)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Waits until `path` exists in a running container.
fn wait_for(c: &Capsa, ctr: &str, path: &str) {
    for _ in 0..200 {
        let ok = c
            .cmd(&["exec", ctr, "test", "-e", path])
            .output()
            .unwrap()
            .status
            .success();
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{path} never appeared in {ctr}");
}

/// Entry names and, for regular files, contents.
fn tar_entries(bytes: &[u8]) -> Vec<(String, Option<String>)> {
    let mut ar = tar::Archive::new(bytes);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let data = e.header().entry_type().is_file().then(|| {
                let mut b = Vec::new();
                e.read_to_end(&mut b).unwrap();
                String::from_utf8_lossy(&b).into_owned()
            });
            (name, data)
        })
        .collect()
}

/// The uid files copied to the host should get: the caller's.
fn caller_uid(c: &Capsa) -> u32 {
    match &c.user {
        None => 0,
        Some(u) => {
            let out = Command::new("id").args(["-u", u]).output().unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        }
    }
}

both!(cp_running_container, |c: &Capsa, img: &str| {
    let w = work(c);
    c.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        img,
        "sh",
        "-c",
        "mkdir -p /d/sub && echo a > /d/a && echo b > /d/sub/b && ln -s /d/a /d/alink && touch /d/ready && sleep 1000",
    ]);
    wait_for(c, "box", "/d/ready");
    // Host to container: into an existing directory, and under a new name.
    c.ok(&["cp", s(&w.join("hello")), "box:/tmp/"]);
    assert_eq!(
        c.ok(&["exec", "box", "cat", "/tmp/hello"]),
        "hello from the host\n"
    );
    c.ok(&["cp", s(&w.join("hello")), "box:/tmp/renamed"]);
    assert_eq!(
        c.ok(&["exec", "box", "cat", "/tmp/renamed"]),
        "hello from the host\n"
    );
    // Container to host: a directory as a new name, into an existing directory, and
    // its content only with `/.`.
    c.ok(&["cp", "box:/d", s(&w.join("out"))]);
    assert_eq!(std::fs::read_to_string(w.join("out/sub/b")).unwrap(), "b\n");
    assert_eq!(
        std::fs::read_link(w.join("out/alink")).unwrap(),
        Path::new("/d/a")
    );
    let meta = std::fs::metadata(w.join("out/a")).unwrap();
    assert_eq!(meta.uid(), caller_uid(c), "copies belong to the caller");
    std::fs::create_dir(w.join("into")).unwrap();
    std::fs::create_dir(w.join("contents")).unwrap();
    give(c, &w);
    c.ok(&["cp", "box:/d", s(&w.join("into"))]);
    assert!(w.join("into/d/sub/b").is_file());
    c.ok(&["cp", "box:/d/.", s(&w.join("contents"))]);
    assert!(w.join("contents/sub/b").is_file() && !w.join("contents/d").exists());
    // A tar stream out of the container.
    let out = c.cmd(&["cp", "box:/d", "-"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = tar_entries(&out.stdout);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    for n in ["d", "d/a", "d/alink", "d/sub", "d/sub/b"] {
        assert!(names.contains(&n), "{n} not in {names:?}");
    }
    assert!(entries.contains(&("d/a".into(), Some("a\n".into()))));
    // A tar stream into it.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(9);
    h.set_mode(0o644);
    b.append_data(&mut h, "streamed/x", &b"streamed\n"[..])
        .unwrap();
    let tar = b.into_inner().unwrap();
    let mut child = c
        .cmd(&["cp", "-", "box:/tmp"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&tar).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        c.ok(&["exec", "box", "cat", "/tmp/streamed/x"]),
        "streamed\n"
    );
    let mut child = c
        .cmd(&["cp", "-", "box:/tmp/hello"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&tar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("destination must be a directory when copying from stdin"),
        "{}",
        stderr(&out)
    );
});

both!(cp_stopped_container, |c: &Capsa, img: &str| {
    let w = work(c);
    let id = c.ok(&["create", "--name", "st", img, "cat", "/tmp/hello"]);
    let id = id.trim();
    // Copied in while it never ran; the command then sees the file.
    c.ok(&["cp", s(&w.join("hello")), "st:/tmp/hello"]);
    let merged = c.root().join("containers").join(id).join("merged");
    // The run's own mount goes when `container cleanup` (run by the monitor as the
    // container exits) is done; ours must be gone as soon as `cp` returns.
    let mounted = || {
        for _ in 0..100 {
            let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            if !info.contains(s(&merged)) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    };
    if c.user.is_none() {
        assert!(!mounted(), "the temporary mount is gone");
    }
    assert_eq!(c.ok(&["start", "-a", "st"]), "hello from the host\n");
    // And copied out once it exited.
    c.ok(&["cp", "st:/tmp/hello", s(&w.join("back"))]);
    assert_eq!(
        std::fs::read_to_string(w.join("back")).unwrap(),
        "hello from the host\n"
    );
    if c.user.is_none() {
        assert!(!mounted(), "the temporary mount is gone");
    }
    let v: serde_json::Value =
        serde_json::from_str(&c.ok(&["container", "inspect", "st"])).unwrap();
    assert_eq!(v[0]["State"]["Status"], "exited");
    // Between two containers.
    c.ok(&["create", "--name", "other", img, "true"]);
    c.ok(&["cp", "st:/tmp/hello", "other:/copied"]);
    c.ok(&["cp", "other:/copied", s(&w.join("via-other"))]);
    assert_eq!(
        std::fs::read_to_string(w.join("via-other")).unwrap(),
        "hello from the host\n"
    );
});

both!(cp_symlink_escape_stays_inside, |c: &Capsa, img: &str| {
    let w = work(c);
    c.ok(&[
        "run",
        "-d",
        "--name",
        "esc",
        img,
        "sh",
        "-c",
        "ln -s /etc/../../../ /esc && ln -s ../../../../.. /tmp/up && touch /ready && sleep 1000",
    ]);
    wait_for(c, "esc", "/ready");
    let unique = format!(
        "capsa-escape-{}-{}",
        std::process::id(),
        if c.user.is_some() { "rl" } else { "root" }
    );
    for dest in [
        format!("esc:/esc/tmp/{unique}"),
        format!("esc:/tmp/up/tmp/{unique}"),
        format!("esc:/../../../../tmp/{unique}"),
    ] {
        c.ok(&["cp", s(&w.join("hello")), &dest]);
        assert!(
            !Path::new("/tmp").join(&unique).exists(),
            "{dest} wrote to the host"
        );
        assert_eq!(
            c.ok(&["exec", "esc", "cat", &format!("/tmp/{unique}")]),
            "hello from the host\n"
        );
        c.ok(&["exec", "esc", "rm", &format!("/tmp/{unique}")]);
    }
    // Reading through the same links gives the container's files, not the host's.
    let theirs = c.ok(&["exec", "esc", "cat", "/etc/passwd"]);
    for src in [
        "esc:/esc/etc/passwd",
        "esc:/tmp/up/etc/passwd",
        "esc:/../etc/passwd",
    ] {
        let _ = std::fs::remove_file(w.join("pw"));
        c.ok(&["cp", src, s(&w.join("pw"))]);
        assert_eq!(
            std::fs::read_to_string(w.join("pw")).unwrap(),
            theirs,
            "{src}"
        );
    }
    assert_ne!(std::fs::read_to_string("/etc/passwd").unwrap(), theirs);
});

both!(cp_missing_path_fails, |c: &Capsa, img: &str| {
    let w = work(c);
    c.ok(&["create", "--name", "m", img, "true"]);
    let err = c.fails(&["cp", "m:/no/such/file", s(&w.join("x"))], 125);
    assert!(
        err.contains(
            "Error: \"/no/such/file\" could not be found on container m: no such file or directory"
        ),
        "{err}"
    );
    let missing = w.join("nothing-here");
    let err = c.fails(&["cp", s(&missing), "m:/tmp"], 125);
    assert!(
        err.contains(&format!(
            "\"{}\" could not be found on the host: no such file or directory",
            missing.display()
        )),
        "{err}"
    );
    let err = c.fails(&["cp", "nosuch:/etc", s(&w.join("x"))], 125);
    assert!(
        err.contains("no container with name or ID \"nosuch\""),
        "{err}"
    );
    let err = c.fails(&["cp", "m:/etc", s(&w.join("hello"))], 125);
    assert!(
        err.contains("destination must be a directory when copying a directory"),
        "{err}"
    );
    let err = c.fails(&["cp", s(&w.join("hello")), s(&w.join("y"))], 125);
    assert!(err.contains("name a container"), "{err}");
});

both!(diff_lists_changes, |c: &Capsa, img: &str| {
    c.ok(&[
        "run",
        "--name",
        "d",
        img,
        "sh",
        "-c",
        "touch /etc/passwd; rm /bin/ls; mkdir /newdir; echo x > /newdir/f; rm -rf /home; rm -rf /usr; mkdir /usr; echo y > /usr/y",
    ]);
    let out = c.ok(&["diff", "d"]);
    let lines: Vec<&str> = out.lines().collect();
    for l in [
        "C /bin",
        "D /bin/ls",
        "C /etc/passwd",
        "D /home",
        "A /newdir",
        "A /newdir/f",
        // Replaced: overlayfs' opaque directory, read as Podman reads it.
        "D /usr",
        "A /usr/y",
    ] {
        assert!(lines.contains(&l), "{l} not in {lines:?}");
    }
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| &l[2..]);
    assert_eq!(lines, sorted, "sorted by path");
    for hidden in [
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/proc",
        "/sys",
        "/dev",
        "/run",
    ] {
        assert!(!lines.iter().any(|l| &l[2..] == hidden), "{hidden} listed");
    }
    assert_eq!(c.ok(&["container", "diff", "d"]), out);
    let v: serde_json::Value =
        serde_json::from_str(&c.ok(&["diff", "--format", "json", "d"])).unwrap();
    let has = |k: &str, p: &str| v[k].as_array().unwrap().iter().any(|x| x == p);
    assert!(has("changed", "/etc/passwd"));
    assert!(has("added", "/newdir/f"));
    assert!(has("deleted", "/bin/ls") && has("deleted", "/home"));
    // `diff` also reads images; `container diff` only containers.
    assert!(c.ok(&["diff", img]).contains("A /bin/busybox"));
    c.fails(&["container", "diff", img], 125);
});

both!(export_contains_written_file, |c: &Capsa, img: &str| {
    let w = work(c);
    c.ok(&[
        "run",
        "-d",
        "--name",
        "ex",
        img,
        "sh",
        "-c",
        "echo exported > /marker && sleep 1000",
    ]);
    wait_for(c, "ex", "/marker");
    let file = w.join("ex.tar");
    c.ok(&["export", "-o", s(&file), "ex"]);
    let entries = tar_entries(&std::fs::read(&file).unwrap());
    assert!(entries.contains(&("marker".into(), Some("exported\n".into()))));
    assert!(entries.iter().any(|(n, _)| n == "bin/busybox"));
    let out = c.cmd(&["container", "export", "ex"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = tar_entries(&out.stdout);
    assert!(entries.contains(&("marker".into(), Some("exported\n".into()))));
    c.fails(&["export", "nosuch"], 125);
});

both!(commit_then_run, |c: &Capsa, img: &str| {
    c.ok(&[
        "run",
        "--name",
        "cm",
        img,
        "sh",
        "-c",
        "echo committed > /hello.txt; rm /bin/ls",
    ]);
    let id = c.ok(&[
        "commit",
        "-q",
        "-c",
        r#"CMD ["cat","/hello.txt"]"#,
        "-c",
        "ENV FOO=bar",
        "cm",
        "newimg",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(c.ok(&["run", "--rm", "newimg"]), "committed\n");
    assert_eq!(
        c.ok(&["run", "--rm", "newimg", "sh", "-c", "echo $FOO"]),
        "bar\n"
    );
    c.fails(&["run", "--rm", "newimg", "ls"], 127);
    let new = c.inspect("newimg");
    let base = c.inspect(img);
    assert_eq!(new["Id"], id);
    assert_eq!(
        new["Config"]["Cmd"],
        serde_json::json!(["cat", "/hello.txt"])
    );
    assert_eq!(
        new["RootFS"]["Layers"].as_array().unwrap().len(),
        base["RootFS"]["Layers"].as_array().unwrap().len() + 1
    );
    // A running container, and the docker format with a message.
    c.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        img,
        "sh",
        "-c",
        "echo live > /live && sleep 1000",
    ]);
    wait_for(c, "live", "/live");
    c.ok(&[
        "container",
        "commit",
        "-q",
        "-f",
        "docker",
        "-m",
        "a message",
        "live",
        "liveimg",
    ]);
    assert_eq!(c.ok(&["run", "--rm", "liveimg", "cat", "/live"]), "live\n");
    assert_eq!(
        c.inspect("liveimg")["ManifestType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let err = c.fails(&["commit", "-m", "no", "live", "x"], 125);
    assert!(
        err.contains("only compatible with the docker image format"),
        "{err}"
    );
});

both!(
    cp_enters_volumes_and_generated_files,
    |c: &Capsa, img: &str| {
        let w = work(c);
        let vol = w.join("vol");
        std::fs::create_dir(&vol).unwrap();
        give(c, &vol);
        let v = format!("{}:/data", vol.display());
        c.ok(&[
            "run",
            "-d",
            "--name",
            "vb",
            "--hostname",
            "fs-host",
            "-v",
            &v,
            "-v",
            "named:/nv",
            img,
            "sleep",
            "1000",
        ]);
        // Into a bind mount: the host directory gets it, as the container sees it.
        c.ok(&["cp", s(&w.join("hello")), "vb:/data/"]);
        assert_eq!(
            std::fs::read_to_string(vol.join("hello")).unwrap(),
            "hello from the host\n"
        );
        assert_eq!(
            c.ok(&["exec", "vb", "cat", "/data/hello"]),
            "hello from the host\n"
        );
        c.ok(&["cp", s(&w.join("hello")), "vb:/nv/x"]);
        assert_eq!(
            c.ok(&["exec", "vb", "cat", "/nv/x"]),
            "hello from the host\n"
        );
        // The generated /etc/hostname is the container's, not the image's empty file.
        c.ok(&["cp", "vb:/etc/hostname", s(&w.join("hn"))]);
        assert_eq!(
            std::fs::read_to_string(w.join("hn")).unwrap().trim(),
            "fs-host"
        );
    }
);

both!(cp_into_and_out_of_a_tmpfs, |c: &Capsa, img: &str| {
    let w = work(c);
    let ro = w.join("ro");
    std::fs::create_dir(&ro).unwrap();
    give(c, &ro);
    let ro_mount = format!("{}:/ro:ro", ro.display());
    let id = c.ok(&[
        "run",
        "-d",
        "--name",
        "tm",
        "--tmpfs",
        "/data",
        "--mount",
        "type=tmpfs,destination=/scratch",
        "-v",
        &ro_mount,
        img,
        "sh",
        "-c",
        "echo inside > /data/in && echo deep > /scratch/in && touch /ready && sleep 1000",
    ]);
    let id = id.trim();
    wait_for(c, "tm", "/ready");
    // Tried: into each tmpfs (as podman 4.3 does, in the container's mount namespace):
    // the container sees the file, the overlay's upper directory under the mount
    // point does not get it.
    let upper = c.root().join("containers").join(id).join("upper");
    for dir in ["/data", "/scratch"] {
        c.ok(&["cp", s(&w.join("hello")), &format!("tm:{dir}/")]);
        assert_eq!(
            c.ok(&["exec", "tm", "cat", &format!("{dir}/hello")]),
            "hello from the host\n"
        );
        let under = upper.join(dir.trim_start_matches('/')).join("hello");
        assert!(!under.exists(), "{} was written", under.display());
    }
    // A tar stream into it, too.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(9);
    h.set_mode(0o644);
    b.append_data(&mut h, "streamed", &b"streamed\n"[..])
        .unwrap();
    let tar = b.into_inner().unwrap();
    let mut child = c
        .cmd(&["cp", "-", "tm:/data"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&tar).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(c.ok(&["exec", "tm", "cat", "/data/streamed"]), "streamed\n");
    // Tried: out of each tmpfs: what the container wrote there.
    c.ok(&["cp", "tm:/data/in", s(&w.join("from-data"))]);
    assert_eq!(
        std::fs::read_to_string(w.join("from-data")).unwrap(),
        "inside\n"
    );
    c.ok(&["cp", "tm:/scratch/.", s(&w.join("from-scratch"))]);
    assert_eq!(
        std::fs::read_to_string(w.join("from-scratch/in")).unwrap(),
        "deep\n"
    );
    let out = c.cmd(&["cp", "tm:/data", "-"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = tar_entries(&out.stdout);
    assert!(entries.contains(&("data/in".into(), Some("inside\n".into()))));
    // Tried: into a read-only bind mount: refused as in the container (podman: "read-only
    // file system"), the host directory untouched.
    let err = c.fails(&["cp", s(&w.join("hello")), "tm:/ro/"], 125);
    assert!(
        err.to_lowercase().contains("read-only file system"),
        "{err}"
    );
    assert!(!ro.join("hello").exists());
    // Tried: once stopped the tmpfs is gone; a copy lands in the container's own files,
    // which the next run's tmpfs starts with (tmpcopyup), as with podman.
    c.ok(&["stop", "-t", "0", "tm"]);
    c.ok(&["cp", s(&w.join("hello")), "tm:/data/after"]);
    assert!(upper.join("data/after").exists());
    c.ok(&["start", "tm"]);
    assert_eq!(
        c.ok(&["exec", "tm", "cat", "/data/after"]),
        "hello from the host\n"
    );
});

both!(commit_squash_makes_one_layer, |c: &Capsa, img: &str| {
    c.ok(&[
        "run",
        "--name",
        "sq",
        img,
        "sh",
        "-c",
        "echo squashed > /hello.txt; rm /bin/ls",
    ]);
    let id = c.ok(&[
        "commit",
        "-q",
        "--squash",
        "-c",
        r#"CMD ["cat","/hello.txt"]"#,
        "sq",
        "squashed",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    // Tried: podman 4.3's result: one layer, one history entry.
    let v = c.inspect("squashed");
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(c.layer_dirs("squashed").len(), 1);
    let hist: Vec<serde_json::Value> =
        serde_json::from_str(&c.ok(&["history", "--format", "json", "squashed"])).unwrap();
    assert_eq!(hist.len(), 1, "{hist:?}");
    // It runs, with the image's files, the container's additions and without what the
    // container deleted (no whiteout is needed in a single layer).
    assert_eq!(c.ok(&["run", "--rm", "squashed"]), "squashed\n");
    c.ok(&["run", "--rm", "squashed", "test", "-x", "/bin/sh"]);
    c.fails(&["run", "--rm", "squashed", "ls"], 127);
    // A running container squashes too (`-s`, its mount used as it is).
    c.ok(&[
        "run",
        "-d",
        "--name",
        "sqlive",
        img,
        "sh",
        "-c",
        "echo live > /live && sleep 1000",
    ]);
    wait_for(c, "sqlive", "/live");
    c.ok(&["commit", "-q", "-s", "sqlive", "squashed-live"]);
    assert_eq!(
        c.inspect("squashed-live")["RootFS"]["Layers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        c.ok(&["run", "--rm", "squashed-live", "cat", "/live"]),
        "live\n"
    );
});
