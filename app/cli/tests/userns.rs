//! `--userns keep-id` and `--userns auto`: the maps a container gets, files keeping their
//! owners inside (id-shifted layer copies, cached and removed with the image), disjoint
//! `auto` ranges, and bad option values. Every test runs as root and as the rootless
//! test user, each with its own store.

mod common;
use common::*;

fn inspect(c: &Capsa, name: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&c.ok(&["container", "inspect", name])).unwrap();
    v[0].clone()
}

/// The id-shifted layer copies in the store: `layers/<driver>/<layer>/idmap/<key>`.
fn shifted_copies(c: &Capsa) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let layers = c.root().join("layers").join(c.driver);
    for l in std::fs::read_dir(layers).unwrap().flatten() {
        for e in std::fs::read_dir(l.path().join("idmap"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !e.file_name().to_string_lossy().starts_with('.') {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The rootless user's uid and the size of its subordinate range.
fn rootless_ids(user: &str) -> (u32, u64) {
    let out = std::process::Command::new("id")
        .args(["-u", user])
        .output()
        .unwrap();
    let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
    let count = subuid
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() == 3 && (f[0] == user || f[0] == uid.to_string()))
                .then(|| f[2].parse::<u64>().unwrap())
        })
        .sum();
    (uid, count)
}

/// Root's `auto` namespaces come from the `containers` user's subordinate ranges, as
/// with Podman; scripts/setup.sh adds them.
fn auto_available(c: &Capsa, test: &str) -> bool {
    if c.user.is_some() {
        return true;
    }
    let has = |f: &str| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("containers:"))
    };
    if has("/etc/subuid") && has("/etc/subgid") {
        return true;
    }
    eprintln!(
        "SKIP {test}: no ranges for user containers in /etc/subuid and /etc/subgid (scripts/setup.sh adds them)"
    );
    false
}

fn normalize(map: &str) -> Vec<String> {
    map.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

/// Parses the `IDMappings.UidMap` strings of inspect into (container, host, size).
fn id_maps(v: &serde_json::Value, which: &str) -> Vec<(u64, u64, u64)> {
    v["HostConfig"]["IDMappings"][which]
        .as_array()
        .unwrap_or_else(|| panic!("no IDMappings.{which} in {v}"))
        .iter()
        .map(|s| {
            let f: Vec<u64> = s
                .as_str()
                .unwrap()
                .split(':')
                .map(|x| x.parse().unwrap())
                .collect();
            (f[0], f[1], f[2])
        })
        .collect()
}

both!(keep_id, |c: &Capsa, img: &str| {
    let script = "id -u; id -g; cat /proc/self/uid_map; echo HOME=$HOME; \
                  stat -c '%u %g' /bin/busybox / /etc/passwd; grep -F ':*:' /etc/passwd; \
                  touch /tmp/made && stat -c %u /tmp/made";
    let Some(user) = &c.user else {
        // Podman 4.3 as root: "keep-id is only supported in rootless mode".
        let err = c.fails(&["run", "--rm", "--userns", "keep-id", img, "true"], 125);
        assert!(
            err.contains("keep-id is only supported in rootless mode"),
            "{err}"
        );
        assert!(err.contains("hint:"), "{err}");
        assert!(shifted_copies(c).is_empty());
        return;
    };
    let (uid, subids) = rootless_ids(user);
    let out = c.ok(&[
        "run",
        "--rm",
        "--userns",
        "keep-id",
        "--network",
        "none",
        img,
        "sh",
        "-c",
        script,
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        uid.to_string(),
        "id -u is the caller's uid: {out}"
    );
    assert_eq!(lines[1], uid.to_string(), "id -g: {out}");
    // Podman's keep-id map: 0… → 1…, the user → 0 (the user outside), the rest as is.
    assert_eq!(
        normalize(&lines[2..5].join("\n")),
        [
            format!("0 1 {uid}"),
            format!("{uid} 0 1"),
            format!("{} {} {}", uid + 1, uid + 1, subids - uid as u64)
        ],
        "{out}"
    );
    assert_eq!(lines[5], "HOME=/", "{out}");
    assert_eq!(
        &lines[6..9],
        ["0 0", "0 0", "0 0"],
        "image files keep root: {out}"
    );
    assert!(
        lines[9].starts_with(&format!("{user}:*:{uid}:{uid}::/:")),
        "a passwd entry like Podman's: {out}"
    );
    assert_eq!(
        lines[10],
        uid.to_string(),
        "new files belong to the user: {out}"
    );
    // The user and the map are in the record, and -u wins over keep-id's user.
    c.ok(&["create", "--name", "k", "--userns", "keep-id", img, "true"]);
    let v = inspect(c, "k");
    assert_eq!(v["Config"]["User"], format!("{uid}:{uid}"));
    assert_eq!(v["HostConfig"]["UsernsMode"], "keep-id");
    assert_eq!(id_maps(&v, "UidMap")[1], (uid as u64, 0, 1));
    let out = c.ok(&[
        "run",
        "--rm",
        "--userns",
        "keep-id",
        "-u",
        "0",
        "--network",
        "none",
        img,
        "id",
        "-u",
    ]);
    assert_eq!(out, "0\n");
    // keep-id:uid=,gid= as Podman: 0 1 5 / 5 0 1 / 6 6 …
    let out = c.ok(&[
        "run",
        "--rm",
        "--userns",
        "keep-id:uid=5,gid=6",
        "--network",
        "none",
        img,
        "sh",
        "-c",
        "id -u; id -g; head -2 /proc/self/uid_map",
    ]);
    let lines: Vec<String> = normalize(&out);
    assert_eq!(lines[..4], ["5", "6", "0 1 5", "5 0 1"], "{out}");
    // Every keep-id container shares one shifted copy per layer; the default network
    // works from the nested namespace too.
    let copies = shifted_copies(c);
    assert!(!copies.is_empty());
    c.ok(&["run", "--rm", "--userns", "keep-id", img, "true"]);
    assert_eq!(shifted_copies(c), copies);
});

both!(auto_ranges_are_disjoint, |c: &Capsa, img: &str| {
    if !auto_available(c, "auto_ranges_are_disjoint") {
        return;
    }
    for name in ["a1", "a2"] {
        c.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--userns",
            "auto",
            "--network",
            "none",
            img,
            "sleep",
            "1000",
        ]);
    }
    let mut ranges = Vec::new();
    for name in ["a1", "a2"] {
        let v = inspect(c, name);
        assert_eq!(v["HostConfig"]["UsernsMode"], "auto");
        let uids = id_maps(&v, "UidMap");
        let gids = id_maps(&v, "GidMap");
        // containers/storage's estimate for busybox: below the minimum, so 1024.
        assert_eq!(uids, [(0, uids[0].1, 1024)], "{name}");
        assert_eq!(gids, [(0, gids[0].1, 1024)], "{name}");
        // What the kernel says inside matches the record.
        let map = c.ok(&["exec", name, "cat", "/proc/self/uid_map"]);
        assert_eq!(
            normalize(&map),
            [format!("0 {} 1024", uids[0].1)],
            "{name}: {map}"
        );
        let owners = c.ok(&[
            "exec",
            name,
            "stat",
            "-c",
            "%u %g",
            "/",
            "/bin/busybox",
            "/etc",
        ]);
        assert_eq!(owners, "0 0\n0 0\n0 0\n", "{name}");
        assert_eq!(c.ok(&["exec", name, "id", "-u"]), "0\n");
        c.ok(&[
            "exec",
            name,
            "sh",
            "-c",
            "echo hi > /root-owned && chown 33:33 /root-owned",
        ]);
        ranges.push(uids[0].1);
    }
    let (a, b) = (ranges[0], ranges[1]);
    assert!(
        a + 1024 <= b || b + 1024 <= a,
        "ranges overlap: {a} and {b}"
    );
    if c.user.is_some() {
        // Rootless: inside the user's namespace, never its own uid (namespace id 0).
        assert!(a >= 1 && b >= 1);
    }
    // The container's writable layer holds what it wrote, owned by its mapped ids.
    let upper = c
        .root()
        .join("containers")
        .join(inspect(c, "a1")["Id"].as_str().unwrap())
        .join("upper");
    if c.user.is_none() {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(upper.join("root-owned")).unwrap();
        assert_eq!((m.uid() as u64, m.gid() as u64), (a + 33, a + 33));
        assert_eq!(std::fs::metadata(&upper).unwrap().uid() as u64, a);
    }
    // Two auto containers: two shifted copies of the one layer.
    assert_eq!(shifted_copies(c).len(), 2 * c.layer_dirs(img).len());
    // size= and a range asked for with uidmapping=.
    let out = c.ok(&[
        "run",
        "--rm",
        "--userns",
        "auto:size=2000",
        "--network",
        "none",
        img,
        "cat",
        "/proc/self/uid_map",
    ]);
    let lines = normalize(&out);
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].starts_with("0 ") && lines[0].ends_with(" 2000"),
        "{out}"
    );
    let host: u64 = lines[0].split(' ').nth(1).unwrap().parse().unwrap();
    for r in [a, b] {
        assert!(host + 2000 <= r || r + 1024 <= host, "{host} overlaps {r}");
    }
});

both!(
    auto_creates_at_once_get_disjoint_ranges,
    |c: &Capsa, img: &str| {
        if !auto_available(c, "auto_creates_at_once_get_disjoint_ranges") {
            return;
        }
        let children: Vec<_> = (0..4)
            .map(|i| {
                c.cmd(&[
                    "create",
                    "--name",
                    &format!("p{i}"),
                    "--userns",
                    "auto:size=1500",
                    img,
                    "true",
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
            })
            .collect();
        for mut ch in children {
            assert!(ch.wait().unwrap().success());
        }
        let mut starts: Vec<u64> = (0..4)
            .map(|i| {
                let maps = id_maps(&inspect(c, &format!("p{i}")), "UidMap");
                assert_eq!(maps.len(), 1);
                assert_eq!(maps[0].2, 1500);
                maps[0].1
            })
            .collect();
        starts.sort();
        for w in starts.windows(2) {
            assert!(w[0] + 1500 <= w[1], "overlapping ranges: {starts:?}");
        }
    }
);

both!(
    shifted_copies_are_reused_and_removed_with_the_image,
    |c: &Capsa, img: &str| {
        if !auto_available(c, "shifted_copies_are_reused_and_removed_with_the_image") {
            return;
        }
        let layers = c.layer_dirs(img).len();
        let run = || {
            c.ok(&[
                "run",
                "--rm",
                "--userns",
                "auto",
                "--network",
                "none",
                img,
                "stat",
                "-c",
                "%u",
                "/bin/busybox",
            ])
        };
        assert_eq!(run(), "0\n");
        let first = shifted_copies(c);
        assert_eq!(first.len(), layers, "one copy per layer");
        // The range freed by --rm is the first free one again: same map, same copies.
        let before: Vec<_> = first
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
            .collect();
        assert_eq!(run(), "0\n");
        assert_eq!(shifted_copies(c), first, "the copies were reused");
        let after: Vec<_> = first
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
            .collect();
        assert_eq!(before, after, "not rebuilt");
        // A stopped container started again uses them too.
        c.ok(&[
            "run",
            "--name",
            "again",
            "--userns",
            "auto",
            "--network",
            "none",
            img,
            "true",
        ]);
        let with_two = shifted_copies(c).len();
        c.ok(&["start", "-a", "again"]);
        assert_eq!(shifted_copies(c).len(), with_two);
        // A named volume made for the container belongs to its root inside.
        let out = c.ok(&[
            "run",
            "--rm",
            "--userns",
            "auto",
            "--network",
            "none",
            "-v",
            "uvol:/data",
            img,
            "sh",
            "-c",
            "stat -c '%u %g' /data && touch /data/f && echo ok",
        ]);
        assert_eq!(out, "0 0\nok\n");
        // Removing the image removes its shifted copies.
        c.ok(&["rm", "-a", "-f"]);
        c.ok(&["rmi", img]);
        assert!(shifted_copies(c).is_empty(), "{:?}", shifted_copies(c));
        for p in &first {
            assert!(!p.exists(), "{} is left", p.display());
        }
    }
);

both!(bad_userns_values, |c: &Capsa, img: &str| {
    for (value, says) in [
        (
            "keep-id:uid=x",
            "invalid --userns \"keep-id:uid=x\": uid must be a number",
        ),
        ("keep-id:gid=-1", "gid must be a number"),
        ("keep-id:size=1", "unknown option \"size\""),
        (
            "auto:size=0",
            "invalid --userns \"auto:size=0\": size must be between 1 and 65536",
        ),
        ("auto:size=x", "size must be a number"),
        (
            "auto:uidmapping=0:1",
            "uidmapping must be CONTAINER:HOST:SIZE",
        ),
        ("private", "use host, keep-id"),
        ("bogus", "use host, keep-id"),
    ] {
        for cmd in ["run", "create"] {
            let err = c.fails(&[cmd, "--rm", "--userns", value, img, "true"], 125);
            assert!(err.contains(says), "{value}: {err}");
        }
    }
    assert!(c.ok(&["ps", "-a", "-q"]).is_empty(), "nothing was created");
    // `host` and the default need no namespace of their own.
    let v = c.ok(&[
        "run",
        "--rm",
        "--userns",
        "host",
        "--network",
        "none",
        img,
        "id",
        "-u",
    ]);
    assert_eq!(v, "0\n");
    assert!(shifted_copies(c).is_empty());
});

both!(layered_image_keeps_its_tree, |c: &Capsa, _img: &str| {
    // The multi-layer fixture: files deleted and directories replaced by later layers
    // (whiteouts, opaque directories), hard links, a set-gid file, owners 1000 and
    // nobody. Its shifted copies must give the container exactly the image's tree.
    if !auto_available(c, "layered_image_keeps_its_tree") {
        return;
    }
    let reg = std::env::var("CAPSA_TEST_REGISTRY").unwrap();
    let Ok(fixtures) = std::env::var("CAPSA_TEST_FIXTURES") else {
        eprintln!("SKIP layered_image_keeps_its_tree: CAPSA_TEST_FIXTURES is not set");
        return;
    };
    let Ok(expected) = std::fs::read_to_string(format!("{fixtures}/layers.expected")) else {
        eprintln!("SKIP layered_image_keeps_its_tree: no {fixtures}/layers.expected");
        return;
    };
    let image = format!("{reg}/layers:latest");
    c.ok(&["pull", "-q", &image]);
    let out = c.ok(&[
        "run",
        "--rm",
        "--userns",
        "auto",
        "--network",
        "none",
        &image,
        "busybox",
        "sh",
        "-c",
        "cat /proc/self/uid_map; busybox find / -xdev -exec busybox stat -c '%n %a %u %g %i' {} +",
    ]);
    let mut lines = out.lines();
    let map = normalize(lines.next().unwrap());
    // nobody (65534) owns files in a layer: the estimate covers it.
    assert!(
        map[0].starts_with("0 ") && map[0].ends_with(" 65535"),
        "{map:?}"
    );
    let runtime = [
        "/dev",
        "/proc",
        "/sys",
        "/run",
        "/tmp",
        "/etc/hosts",
        "/etc/hostname",
        "/etc/resolv.conf",
    ];
    let keep = |p: &str| {
        p != "/"
            && !runtime
                .iter()
                .any(|r| p == *r || p.starts_with(&format!("{r}/")))
    };
    let got: std::collections::BTreeMap<String, Vec<String>> = lines
        .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|f| keep(&f[0]))
        .map(|f| (f[0].clone(), f[1..].to_vec()))
        .collect();
    let mut want = std::collections::BTreeMap::new();
    let mut links = Vec::new();
    for l in expected.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if !keep(f[0]) {
            continue;
        }
        let mode = u32::from_str_radix(f[2], 8).unwrap();
        want.insert(
            f[0].to_string(),
            (format!("{mode:o}"), f[3].to_string(), f[4].to_string()),
        );
        if f[1] == "hardlink" {
            links.push((f[0].to_string(), f[5].to_string()));
        }
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the container sees exactly the image's final tree"
    );
    for (path, (mode, uid, gid)) in &want {
        let g = &got[path];
        if !g[0].is_empty() && mode != "777" {
            assert_eq!(&g[0], mode, "mode of {path}");
        }
        assert_eq!((&g[1], &g[2]), (uid, gid), "owner of {path}");
    }
    assert!(!links.is_empty());
    for (a, b) in links {
        assert_eq!(got[&a][3], got[&b][3], "{a} and {b} share an inode");
    }
});

// `commit`, `export` and `diff` of a container with its own user namespace see owners
// as the container does: a file made by the container's root is owned by 0 in the
// committed layer and the export, not by the shifted id it is stored with (the export
// of the stopped container goes through a temporary mount of the shifted layers).
both!(commit_and_export_unshift_owners, |c: &Capsa, img: &str| {
    if !auto_available(c, "commit_and_export_unshift_owners") {
        return;
    }
    c.ok(&[
        "run",
        "--name",
        "u1",
        "--userns",
        "auto",
        "--network",
        "none",
        img,
        "sh",
        "-c",
        "echo made > /made-by-root && mkdir /owned && chown 1000:1000 /owned",
    ]);
    let diff = c.ok(&["diff", "u1"]);
    assert!(diff.lines().any(|l| l == "A /made-by-root"), "{diff}");

    let tar_owners = |bytes: &[u8]| -> Vec<(String, u64, u64)> {
        let mut ar = tar::Archive::new(bytes);
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                )
            })
            .collect()
    };
    let out = c.cmd(&["export", "u1"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = tar_owners(&out.stdout);
    let find = |name: &str| {
        entries
            .iter()
            .find(|(p, ..)| p.trim_end_matches('/') == name)
            .unwrap_or_else(|| panic!("{name} not in the export"))
            .clone()
    };
    assert_eq!(find("made-by-root"), ("made-by-root".into(), 0, 0));
    assert_eq!(find("owned"), ("owned".into(), 1000, 1000));
    assert_eq!(find("bin/busybox").1, 0);

    c.ok(&["commit", "-q", "u1", "localhost/unshifted:1"]);
    let seen = c.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/unshifted:1",
        "stat",
        "-c",
        "%u:%g %n",
        "/made-by-root",
        "/owned",
        "/bin/busybox",
    ]);
    assert_eq!(
        seen,
        "0:0 /made-by-root\n1000:1000 /owned\n0:0 /bin/busybox\n"
    );
    c.ok(&["rm", "u1"]);
});
