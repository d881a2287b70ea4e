//! `capsa volume`: create, ls, inspect, rm, prune, exists, as Podman 4.3 answers them
//! (output, exit codes: 125 engine error, 1 no such volume, 2 volume in use). Each test
//! says what it tried.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;

/// A container record naming the volume's data directory, as a container created with
/// `-v NAME:/dst` stores its resolved mounts; volume commands treat it as in use.
fn fake_container_using(c: &Capsa, id: &str, volume: &str) {
    let dir = c.root().join("containers").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let source = c.root().join("volumes").join(volume).join("_data");
    let rec = serde_json::json!({
        "id": id,
        "mounts": [{"kind": "volume", "destination": "/data", "source": source}],
    });
    std::fs::write(dir.join("container.json"), rec.to_string()).unwrap();
}

#[test]
fn create_list_inspect_remove() {
    let c = Capsa::new();
    assert_eq!(c.ok(&["volume", "create", "myvol"]), "myvol\n");
    // Tried: the same name again; then with --ignore.
    let err = c.fails(&["volume", "create", "myvol"], 125);
    assert!(
        err.contains("volume with name myvol already exists"),
        "{err}"
    );
    assert_eq!(c.ok(&["volume", "create", "--ignore", "myvol"]), "myvol\n");
    c.ok(&[
        "volume",
        "create",
        "-l",
        "a=b",
        "-l",
        "c",
        "-o",
        "o=uid=1000",
        "lab",
    ]);
    let generated = c.ok(&["volume", "create"]);
    assert_eq!(generated.trim().len(), 64);

    let table = c.ok(&["volume", "ls"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "DRIVER      VOLUME NAME");
    assert!(lines.contains(&"local       myvol"), "{table}");
    assert_eq!(lines.len(), 4);
    assert_eq!(
        c.ok(&["volume", "ls", "-q", "--filter", "label=a=b"]),
        "lab\n"
    );
    assert_eq!(
        c.ok(&["volume", "ls", "--noheading", "--filter", "name=^my"]),
        "local       myvol\n"
    );
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&c.ok(&["volume", "ls", "--format", "json"])).unwrap();
    assert_eq!(json.len(), 3);

    let doc: Vec<serde_json::Value> =
        serde_json::from_str(&c.ok(&["volume", "inspect", "lab"])).unwrap();
    let v = &doc[0];
    assert_eq!(v["Name"], "lab");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Labels"], serde_json::json!({"a": "b", "c": ""}));
    assert_eq!(v["UID"], 1000);
    assert_eq!(v["MountCount"], 0);
    let mp = std::path::PathBuf::from(v["Mountpoint"].as_str().unwrap());
    assert_eq!(mp, c.root().join("volumes/lab/_data"));
    assert!(mp.is_dir());
    assert_eq!(
        c.ok(&[
            "volume",
            "inspect",
            "--format",
            "{{.Name}} {{.Driver}}",
            "my"
        ]),
        "myvol local\n",
        "a unique prefix finds the volume"
    );
    assert_eq!(
        c.ok(&["volume", "inspect", "--all", "--format", "{{.Name}}"])
            .lines()
            .count(),
        3
    );
    // Tried: inspecting a volume that does not exist.
    let err = c.fails(&["volume", "inspect", "nope"], 125);
    assert!(err.contains("no such volume nope"), "{err}");
    c.fails(&["volume", "inspect"], 125);

    c.ok(&["volume", "exists", "myvol"]);
    c.fails(&["volume", "exists", "nope"], 1);

    assert_eq!(c.ok(&["volume", "rm", "myvol"]), "myvol\n");
    assert!(!c.root().join("volumes/myvol").exists());
    // Tried: removing it again (1), and with --force (0).
    let err = c.fails(&["volume", "rm", "myvol"], 1);
    assert!(err.contains("no volume with name \"myvol\" found"), "{err}");
    c.ok(&["volume", "rm", "-f", "myvol"]);
    // Tried: neither names nor --all.
    c.fails(&["volume", "rm"], 125);
    c.ok(&["volume", "rm", "--all"]);
    assert_eq!(c.ok(&["volume", "ls", "-q"]), "");
}

#[test]
fn bad_names_options_and_filters() {
    let c = Capsa::new();
    // (what was tried, what the error must say)
    let cases: &[(&[&str], &str)] = &[
        (
            &["volume", "create", "bad!"],
            "invalid volume name \"bad!\"",
        ),
        (
            &["volume", "create", "-d", "nfs", "v"],
            "volume driver \"nfs\" is not available",
        ),
        (
            &["volume", "create", "-o", "bogus=1", "v"],
            "invalid volume option \"bogus\"",
        ),
        (
            &["volume", "create", "-o", "type=tmpfs", "v"],
            "not supported",
        ),
        (
            &["volume", "create", "-l", "=y", "v"],
            "invalid label \"=y\"",
        ),
        (
            &["volume", "ls", "--filter", "bogus=1"],
            "\"bogus\" is an invalid volume filter",
        ),
        (
            &["volume", "ls", "--filter", "dangling=x"],
            "\"x\" is not true or false",
        ),
        (
            &["volume", "prune", "-f", "--filter", "until=someday"],
            "neither a duration",
        ),
    ];
    for (args, want) in cases {
        let err = c.fails(args, 125);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(c.ok(&["volume", "ls", "-q"]), "", "nothing was created");
}

#[test]
fn volumes_in_use_are_kept() {
    let c = Capsa::new();
    c.ok(&["volume", "create", "used"]);
    c.ok(&["volume", "create", "free"]);
    fake_container_using(&c, "c0ffee", "used");
    // Tried: removing a volume a container uses (2), even with --force.
    let err = c.fails(&["volume", "rm", "used"], 2);
    assert!(
        err.contains("volume used is being used by the following container(s): c0ffee"),
        "{err}"
    );
    c.fails(&["volume", "rm", "-f", "used"], 2);
    assert_eq!(
        c.ok(&["volume", "ls", "-q", "--filter", "dangling=true"]),
        "free\n"
    );
    assert_eq!(
        c.ok(&["volume", "ls", "-q", "--filter", "dangling=false"]),
        "used\n"
    );
    // Tried: rm of both: the free one goes, the used one is reported (2).
    let out = c.run(&["volume", "rm", "free", "used"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "free\n");
    c.ok(&["volume", "create", "free2"]);
    assert_eq!(c.ok(&["volume", "prune", "-f"]), "free2\n");
    assert_eq!(c.ok(&["volume", "ls", "-q"]), "used\n");
}

#[test]
fn prune_asks_first() {
    let c = Capsa::new();
    c.ok(&["volume", "create", "p1"]);
    c.ok(&["volume", "create", "-l", "keep=1", "p2"]);
    // Tried: no answer at all (stdin closed): refused, nothing removed.
    let err = c.fails(&["volume", "prune"], 125);
    assert!(err.contains("pass --force"), "{err}");
    // Tried: answering n.
    let (code, out, err) = with_stdin(&c, &["volume", "prune"], "n\n");
    assert_eq!(code, Some(0));
    assert_eq!(out, "", "stdout carries data only");
    assert!(
        err.contains("The following volumes will be removed:\np1\np2\n"),
        "{err}"
    );
    assert_eq!(c.ok(&["volume", "ls", "-q"]).lines().count(), 2);
    // Tried: y, with a filter that keeps p2.
    let (code, out, _) = with_stdin(&c, &["volume", "prune", "--filter", "label!=keep"], "y\n");
    assert_eq!(code, Some(0));
    assert_eq!(out, "p1\n");
    assert_eq!(c.ok(&["volume", "ls", "-q"]), "p2\n");
    c.ok(&["volume", "prune", "-f"]);
    let (code, _, err) = with_stdin(&c, &["volume", "prune"], "");
    assert_eq!(code, Some(0));
    assert!(err.contains("No dangling volumes found"), "{err}");
}

#[test]
fn rootless_volume_data_belongs_to_the_user() {
    let user = need!("CAPSA_TEST_ROOTLESS_USER");
    if !is_root() {
        eprintln!("SKIP rootless_volume_data_belongs_to_the_user: needs root to switch to {user}");
        return;
    }
    let c = Capsa::rootless(&user);
    c.ok(&["volume", "create", "mine"]);
    c.ok(&["volume", "create", "-o", "o=uid=1000,gid=1000", "hers"]);
    let owner = std::fs::metadata(c.path()).unwrap().uid();
    // Container root is the user on the host.
    let mine = std::fs::metadata(c.root().join("volumes/mine/_data")).unwrap();
    assert_eq!(mine.uid(), owner);
    // uid 1000 inside is a subordinate id outside, not the user and not root.
    let hers = std::fs::metadata(c.root().join("volumes/hers/_data")).unwrap();
    assert_ne!(hers.uid(), owner);
    assert_ne!(hers.uid(), 0);
    assert_eq!(c.ok(&["volume", "rm", "mine", "hers"]), "mine\nhers\n");
}
