//! Pull, list, inspect, tag, remove, push against Debian's docker-registry with images
//! that skopeo pushed (scripts/test.sh starts them).

mod common;
use common::fake;
use common::*;
use std::os::unix::fs::MetadataExt;

#[test]
fn pull_lists_and_inspects_busybox() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    let c = Capsa::new();
    let name = format!("{reg}/busybox:latest");
    let id = c.ok(&["pull", &name]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "pull prints the image ID: {id}");

    let table = c.ok(&["images"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("REPOSITORY"), "{header}");
    for col in ["TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(col), "{header}");
    }
    let row = lines.next().unwrap();
    assert!(row.starts_with(&format!("{reg}/busybox")), "{row}");
    assert!(row.contains(&id[..12]), "{row}");

    assert_eq!(c.ok(&["images", "-q"]).trim(), &id[..12]);
    assert_eq!(
        c.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .trim(),
        name
    );
    let js: serde_json::Value =
        serde_json::from_str(&c.ok(&["images", "--format", "json"])).unwrap();
    assert_eq!(js[0]["Id"], id);
    assert!(
        c.ok(&["images", "--digests"])
            .lines()
            .next()
            .unwrap()
            .contains("DIGEST")
    );

    let v = c.inspect(&name);
    assert_eq!(v["Id"], id);
    assert_eq!(v["RepoTags"][0], name);
    assert!(
        v["RepoDigests"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{reg}/busybox@sha256:"))
    );
    assert!(v["Digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(v["Config"]["Cmd"][0], "sh");
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert!(v["Size"].as_u64().unwrap() > 500_000);
    assert_eq!(v["Labels"]["org.capsa.test"], "busybox");
    // Lookups by short ID and by short name.
    assert_eq!(c.inspect(&id[..12])["Id"], id);
    assert_eq!(c.inspect("busybox")["Id"], id);

    let layer = &c.layer_dirs(&name)[0];
    assert!(
        layer.join("bin/busybox").is_file(),
        "busybox unpacked in {}",
        layer.display()
    );
    assert_eq!(
        std::fs::read_link(layer.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );

    assert!(c.run(&["image", "exists", &name]).status.success());
    assert_eq!(
        c.run(&["image", "exists", "nothere"]).status.code(),
        Some(1)
    );

    // A second pull finds every blob present.
    let again = c.run(&["pull", &name]);
    assert!(again.status.success());
    assert!(
        stderr(&again).contains("skipped: already exists"),
        "{}",
        stderr(&again)
    );
    c.assert_only_store_written();
}

#[test]
fn short_names_resolve_through_registries_conf() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    let c = Capsa::new();
    c.write_registries_conf(&[&reg]);
    c.ok(&["pull", "busybox"]);
    let names = c.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(names.trim(), format!("{reg}/busybox:latest"));
    // With no search registries a short name is refused with Podman's explanation.
    let d = Capsa::new();
    let err = d.fails(&["pull", "busybox"], 125);
    assert!(err.contains("unqualified-search"), "{err}");
}

#[test]
fn tag_untag_rmi_and_prune() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    let c = Capsa::new();
    let name = format!("{reg}/busybox:latest");
    let id = c.ok(&["pull", "-q", &name]).trim().to_string();
    c.ok(&["tag", &name, "mybox:v1", "localhost:5999/other/box"]);
    let names = c.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(names.contains("localhost/mybox:v1"), "{names}");
    assert!(names.contains("localhost:5999/other/box:latest"), "{names}");
    assert_eq!(c.inspect("mybox:v1")["Id"], id);

    // rmi of one name of several only untags it.
    let out = c.ok(&["rmi", "mybox:v1"]);
    assert!(out.contains("Untagged: localhost/mybox:v1"), "{out}");
    assert_eq!(c.image_count(), 1);
    // untag IMAGE NAME removes that name; untag IMAGE alone removes every name.
    c.ok(&["untag", &name, &name]);
    assert!(!c.ok(&["images"]).contains(&name));

    // Removing by ID an image with several names needs --force.
    c.ok(&["tag", &id, "again:1"]);
    let err = c.fails(&["rmi", &id[..12]], 125);
    assert!(
        err.contains("more than one name") || err.contains("in use"),
        "{err}"
    );
    c.ok(&["untag", &id]);
    let dangling = c.ok(&["images", "--filter", "dangling=true", "-q"]);
    assert_eq!(dangling.trim(), &id[..12]);
    let pruned = c.ok(&["image", "prune", "-f"]);
    assert!(pruned.contains(&id), "{pruned}");
    assert_eq!(c.image_count(), 0);
    // Layers and blobs went with it.
    assert_eq!(
        std::fs::read_dir(c.root().join("layers/overlay"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(c.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );

    // rmi of an unknown image: exit code 1 as in Podman, and --ignore.
    let err = c.fails(&["rmi", "nosuchimage"], 1);
    assert!(err.contains("image not known"), "{err}");
    c.ok(&["rmi", "--ignore", "nosuchimage"]);
}

#[test]
fn filters_select_images() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    let c = Capsa::new();
    c.ok(&["pull", "-q", &format!("{reg}/busybox:latest")]);
    c.ok(&["pull", "-q", &format!("{reg}/layers:latest")]);
    let only = |f: &str| c.ok(&["images", "--filter", f, "--format", "{{.Repository}}"]);
    assert_eq!(
        only("label=org.capsa.test=busybox").trim(),
        format!("{reg}/busybox")
    );
    assert_eq!(only("reference=*/layers").trim(), format!("{reg}/layers"));
    assert_eq!(only("reference=busybox").trim(), format!("{reg}/busybox"));
    assert_eq!(only("dangling=true").trim(), "");
    let err = c.fails(&["images", "--filter", "bogus=1"], 125);
    assert!(err.contains("invalid filter"), "{err}");
}

/// The tree `layers.expected` describes, read back from a vfs layer (whiteouts applied).
#[test]
fn layers_apply_whiteouts_links_and_owners() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    let fixtures = need!("CAPSA_TEST_FIXTURES");
    let c = Capsa::with_driver("vfs");
    let name = format!("{reg}/layers:latest");
    c.ok(&["pull", "-q", &name]);
    let top = c.layer_dirs(&name).pop().unwrap();
    let expected = std::fs::read_to_string(format!("{fixtures}/layers.expected")).unwrap();
    let mut checked = 0;
    for line in expected
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        // path type mode uid gid link-target sha256-of-content
        let f: Vec<&str> = line.split_whitespace().collect();
        let path = top.join(f[0].trim_start_matches('/'));
        let m =
            std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match f[1] {
            "dir" => assert!(m.is_dir(), "{line}: not a directory"),
            "file" | "hardlink" => assert!(m.is_file(), "{line}: not a file"),
            "symlink" => {
                assert!(m.file_type().is_symlink(), "{line}: not a symlink");
                assert_eq!(
                    std::fs::read_link(&path).unwrap().to_str().unwrap(),
                    f[5],
                    "{line}: link target"
                );
            }
            other => panic!("unknown kind {other} in layers.expected"),
        }
        if f[1] != "symlink" {
            assert_eq!(format!("{:04o}", m.mode() & 0o7777), f[2], "{line}: mode");
        }
        assert_eq!(m.uid().to_string(), f[3], "{line}: uid");
        assert_eq!(m.gid().to_string(), f[4], "{line}: gid");
        if f[1] == "hardlink" {
            let target = std::fs::metadata(top.join(f[5].trim_start_matches('/'))).unwrap();
            assert_eq!(m.ino(), target.ino(), "{line}: hard link shares the inode");
        }
        if f[1] == "file" || f[1] == "hardlink" {
            let data = std::fs::read(&path).unwrap();
            assert_eq!(
                fake::sha(&data),
                format!("sha256:{}", f[6]),
                "{line}: content"
            );
        }
        checked += 1;
    }
    assert!(checked > 5, "layers.expected lists the tree");
    assert!(!top.join("data/b").exists(), "whiteout removed data/b");
}

#[test]
fn overlay_layers_keep_whiteouts_as_devices() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    if !is_root() {
        eprintln!("SKIP overlay_layers_keep_whiteouts_as_devices: needs root");
        return;
    }
    let c = Capsa::new();
    let name = format!("{reg}/layers:latest");
    c.ok(&["pull", "-q", &name]);
    let dirs = c.layer_dirs(&name);
    let wh = dirs.iter().map(|d| d.join("data/b")).find(|p| {
        std::fs::symlink_metadata(p)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()))
    });
    assert!(
        wh.is_some(),
        "a 0/0 character device marks data/b as deleted in an upper layer"
    );
}

#[test]
fn multiarch_index_picks_the_platform() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    let c = Capsa::with_driver("vfs");
    let name = format!("{reg}/multiarch:latest");
    c.ok(&["pull", "-q", &name]);
    let top = c.layer_dirs(&name).pop().unwrap();
    assert_eq!(
        std::fs::read_to_string(top.join("etc/arch"))
            .unwrap()
            .trim(),
        "amd64"
    );
    assert_eq!(c.inspect(&name)["Architecture"], "amd64");
    let d = Capsa::with_driver("vfs");
    d.ok(&["pull", "-q", "--platform", "linux/arm64", &name]);
    let top = d.layer_dirs(&name).pop().unwrap();
    assert_eq!(
        std::fs::read_to_string(top.join("etc/arch"))
            .unwrap()
            .trim(),
        "arm64"
    );
    let err = d.fails(&["pull", "--platform", "linux/s390x", &name], 125);
    assert!(err.contains("no image found in manifest list"), "{err}");
}

#[test]
fn gzip_zstd_and_plain_layers_and_shared_unpacking() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    let c = Capsa::new();
    for tag in ["gzip", "zstd", "none"] {
        c.ok(&["pull", "-q", &format!("{reg}/compress:{tag}")]);
    }
    c.ok(&["pull", "-q", &format!("{reg}/busybox:v2s2")]);
    let v = c.inspect(&format!("{reg}/busybox:v2s2"));
    assert_eq!(
        v["ManifestType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    // Same content, different compressions: one unpacked layer serves all three.
    let diff_ids: std::collections::BTreeSet<String> = ["gzip", "zstd", "none"]
        .iter()
        .map(|t| {
            c.inspect(&format!("{reg}/compress:{t}"))["RootFS"]["Layers"][0]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let layers = std::fs::read_dir(c.root().join("layers/overlay"))
        .unwrap()
        .count();
    assert!(
        layers <= diff_ids.len() + 1,
        "layers are unpacked once per content ({layers} dirs)"
    );
}

#[test]
fn push_roundtrip_keeps_the_image() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    let c = Capsa::new();
    let id = c
        .ok(&["pull", "-q", &format!("{reg}/busybox:latest")])
        .trim()
        .to_string();
    let dest = format!("{reg}/pushed/box:{}", std::process::id());
    c.ok(&["push", "-q", &format!("{reg}/busybox:latest"), &dest]);
    c.ok(&[
        "push",
        "-q",
        "--format",
        "v2s2",
        &format!("{reg}/busybox:latest"),
        &format!("{dest}-v2s2"),
    ]);
    let d = Capsa::new();
    assert_eq!(d.ok(&["pull", "-q", &dest]).trim(), id);
    // A fresh store, so the image is recorded with the converted manifest.
    let e = Capsa::new();
    assert_eq!(e.ok(&["pull", "-q", &format!("{dest}-v2s2")]).trim(), id);
    assert_eq!(
        e.inspect(&format!("{dest}-v2s2"))["ManifestType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
}

#[test]
fn basic_auth_login_pull_logout() {
    let reg = need!("CAPSA_TEST_REGISTRY_BASIC");
    let c = Capsa::new();
    let name = format!("{reg}/busybox:latest");
    let err = c.fails(&["pull", &name], 125);
    assert!(err.contains("authentication required"), "{err}");
    assert!(err.contains("hint: log in with `capsa login"), "{err}");
    let err = c.fails(&["login", "-u", "capsa", "-p", "wrong", &reg], 125);
    assert!(
        err.contains("invalid username or password") || err.contains("401"),
        "{err}"
    );
    assert!(
        !c.path().join("auth.json").exists(),
        "a failed login stores nothing"
    );
    assert!(
        c.ok(&["login", "-u", "capsa", "-p", "capsa-secret", &reg])
            .contains("Login Succeeded")
    );
    let auth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.path().join("auth.json")).unwrap()).unwrap();
    assert!(auth["auths"][&reg]["auth"].is_string());
    assert_eq!(c.ok(&["login", "--get-login", &reg]).trim(), "capsa");
    c.ok(&["pull", "-q", &name]);
    c.ok(&["logout", &reg]);
    let d = Capsa::new();
    d.ok(&["pull", "-q", "--creds", "capsa:capsa-secret", &name]);
    // --authfile on login and pull, instead of REGISTRY_AUTH_FILE's file.
    let e = Capsa::new();
    let custom = e.path().join("custom-auth.json");
    let custom = custom.to_str().unwrap();
    e.ok(&[
        "login",
        "--authfile",
        custom,
        "-u",
        "capsa",
        "-p",
        "capsa-secret",
        &reg,
    ]);
    assert!(!e.path().join("auth.json").exists());
    e.fails(&["pull", "-q", &name], 125);
    e.ok(&["pull", "-q", "--authfile", custom, &name]);
}

#[test]
fn token_auth_scopes() {
    let reg = need!("CAPSA_TEST_REGISTRY_TOKEN");
    let c = Capsa::new();
    // Anonymous tokens may pull public/* only.
    c.ok(&["pull", "-q", &format!("{reg}/public/busybox:latest")]);
    let err = c.fails(&["pull", &format!("{reg}/busybox:latest")], 125);
    assert!(
        err.contains("authentication required") || err.contains("denied"),
        "{err}"
    );
    // Anonymous push is refused: the token lacks the push scope.
    let err = c.fails(
        &[
            "push",
            &format!("{reg}/public/busybox:latest"),
            &format!("{reg}/public/copy:1"),
        ],
        125,
    );
    assert!(
        err.contains("authentication required") || err.contains("denied"),
        "{err}"
    );
    c.ok(&["login", "-u", "capsa", "-p", "capsa-secret", &reg]);
    c.ok(&["pull", "-q", &format!("{reg}/busybox:latest")]);
    c.ok(&[
        "push",
        "-q",
        &format!("{reg}/public/busybox:latest"),
        &format!("{reg}/private/copy:1"),
    ]);
}

#[test]
fn identity_token_from_auth_file() {
    let reg = need!("CAPSA_TEST_REGISTRY_TOKEN");
    let c = Capsa::new();
    // An auth.json entry with an OAuth2 refresh token (what `docker login` stores for
    // some registries) instead of a password.
    let auth =
        serde_json::json!({"auths": {reg.clone(): {"identitytoken": "capsa-refresh:capsa"}}});
    std::fs::write(c.path().join("auth.json"), auth.to_string()).unwrap();
    c.ok(&["pull", "-q", &format!("{reg}/busybox:latest")]);
    // A refresh token the server does not know is refused.
    let auth = serde_json::json!({"auths": {reg.clone(): {"identitytoken": "bogus"}}});
    std::fs::write(c.path().join("auth.json"), auth.to_string()).unwrap();
    let d = Capsa::new();
    std::fs::copy(c.path().join("auth.json"), d.path().join("auth.json")).unwrap();
    let err = d.fails(&["pull", &format!("{reg}/busybox:latest")], 125);
    assert!(err.contains("authentication required"), "{err}");
}

#[test]
fn all_tags_pulls_every_tag() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    let c = Capsa::new();
    c.ok(&["pull", "-q", "--all-tags", &format!("{reg}/compress")]);
    let tags = c.ok(&["images", "--format", "{{.Tag}}"]);
    let mut tags: Vec<&str> = tags.lines().collect();
    tags.sort();
    assert_eq!(tags, ["gzip", "none", "zstd"]);
    let err = c.fails(
        &["pull", "--all-tags", &format!("{reg}/compress:gzip")],
        125,
    );
    assert!(err.contains("tag"), "{err}");
}

#[test]
fn short_name_prompt_on_a_terminal() {
    let reg = need!("CAPSA_TEST_REGISTRY");
    let c = Capsa::new();
    let conf = format!(
        "unqualified-search-registries = [\"127.0.0.1:1\", {reg:?}]\nshort-name-mode = \"enforcing\"\n[[registry]]\nlocation = {reg:?}\ninsecure = true\n"
    );
    std::fs::write(c.path().join("registries.conf"), conf).unwrap();
    // Tried: no terminal, two search registries, enforcing mode: refused as Podman does.
    let err = c.fails(&["pull", "busybox"], 125);
    assert!(err.contains("cannot prompt without a TTY"), "{err}");
    // Tried: a terminal (script(1) gives capsa a pty) where the user picks the second.
    let cmd = c.cmd(&["pull", "-q", "busybox"]);
    let line: Vec<String> = std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| format!("'{}'", a.to_string_lossy())))
        .collect();
    let mut script = std::process::Command::new("script");
    script.args(["-qec", &line.join(" "), "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            script.env(k, v);
        }
    }
    script
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = script.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Please select an image"), "{text}");
    assert_eq!(
        c.ok(&["images", "--format", "{{.Repository}}"]).trim(),
        format!("{reg}/busybox")
    );
}
