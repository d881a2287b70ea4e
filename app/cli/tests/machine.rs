//! `capsa machine`: the store and its errors without a VM, then real machines (the floor
//! guest: the host's kernel and a busybox initramfs that behaves like the contract's
//! guest on its console, its data disk and its power button) under TCG.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use capsa_core::machine::{floor, image};

struct Machines {
    dir: tempfile::TempDir,
}

impl Machines {
    fn new() -> Machines {
        Machines {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("machines")
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_capsa"));
        c.args(args)
            .env("CAPSA_MACHINE_DIR", self.root())
            .env("CAPSA_MACHINE_ACCEL", "tcg")
            .env("CAPSA_MACHINE_STOP_TIMEOUT", "120")
            .env_remove("CAPSA_MACHINE_IMAGE")
            .env("NO_COLOR", "1");
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "capsa {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    /// Runs, expects `code`, returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(code), "capsa {args:?}: {err}");
        err
    }
    fn machine_dir(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }
}

impl Drop for Machines {
    /// A test that failed half-way leaves no VM behind (its folder goes with the
    /// TempDir, and nothing else would ever stop it).
    fn drop(&mut self) {
        let Ok(dirs) = std::fs::read_dir(self.root()) else {
            return;
        };
        for d in dirs.flatten() {
            if let Some(vm) = capsa_core::process::live(&d.path().join("qemu.pid")) {
                let _ = vm.signal(libc::SIGKILL);
            }
        }
    }
}

/// A guest image that verifies but does not boot: enough for everything but `start`.
fn fake_image(dir: &Path) -> PathBuf {
    let img = dir.join("capsa-guest-0.0.1-x86_64");
    image::write_test_image(
        &img,
        "0.0.1",
        "x86_64",
        "quiet",
        &[
            ("vmlinuz", b"not a kernel"),
            ("initrd.img", b"not an initrd"),
            ("rootfs.img", &[0u8; 4096]),
        ],
    )
    .unwrap();
    img
}

#[test]
fn init_ls_inspect_set_rm_without_a_vm() {
    let t = Machines::new();
    let img = fake_image(t.dir.path());
    let img_s = img.display().to_string();
    assert_eq!(t.ok(&["machine", "ls", "--format", "json"]).trim(), "[]");
    t.ok(&[
        "machine",
        "init",
        "--image",
        &img_s,
        "--cpus",
        "3",
        "--memory",
        "1024",
        "--disk-size",
        "2",
    ]);
    t.ok(&[
        "machine",
        "init",
        "m2",
        "--image",
        &img_s,
        "--disk-size",
        "1",
        "-v",
        "/tmp:/mnt/tmp",
    ]);

    // The folder holds what docs/internals.md lists.
    let d = t.machine_dir("capsa-default");
    for f in [
        "config.json",
        "data.img",
        "image/vmlinuz",
        "image/manifest.json",
        "id_ed25519",
        "id_ed25519.pub",
        "events.jsonl",
    ] {
        assert!(d.join(f).exists(), "{f}");
    }
    assert_eq!(
        std::fs::metadata(d.join("data.img")).unwrap().len(),
        2 << 30
    );
    let events = std::fs::read_to_string(d.join("events.jsonl")).unwrap();
    assert!(events.contains("\"event\":\"created\""), "{events}");

    let table = t.ok(&["machine", "ls"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    for h in [
        "VM TYPE",
        "CREATED",
        "LAST UP",
        "CPUS",
        "MEMORY",
        "DISK SIZE",
    ] {
        assert!(lines[0].contains(h), "{table}");
    }
    assert!(lines[1].starts_with("capsa-default*"), "{table}");
    assert!(
        lines[1].contains("qemu")
            && lines[1].contains("Never")
            && lines[1].contains("1GiB")
            && lines[1].contains("2GiB"),
        "{table}"
    );
    assert!(lines[2].starts_with("m2 "), "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&t.ok(&["machine", "ls", "--format", "json"])).unwrap();
    let first = &json[0];
    assert_eq!(first["Name"], "capsa-default");
    assert_eq!(first["Default"], true);
    assert_eq!(first["Running"], false);
    assert_eq!(first["CPUs"], 3);
    assert_eq!(first["Memory"], "1073741824");
    assert_eq!(first["DiskSize"], "2147483648");
    assert_eq!(first["VMType"], "qemu");
    assert!(first["Port"].as_u64().unwrap() > 0);
    assert_eq!(t.ok(&["machine", "ls", "-q"]), "capsa-default\nm2\n");

    let ins: serde_json::Value =
        serde_json::from_str(&t.ok(&["machine", "inspect", "m2"])).unwrap();
    assert_eq!(ins[0]["Name"], "m2");
    assert_eq!(ins[0]["State"], "stopped");
    assert_eq!(ins[0]["Image"]["Version"], "0.0.1");
    assert_eq!(ins[0]["Mounts"][0]["Target"], "/mnt/tmp");
    assert_eq!(
        t.ok(&[
            "machine",
            "inspect",
            "--format",
            "{{.Resources.CPUs}}",
            "capsa-default"
        ])
        .trim(),
        "3"
    );

    // set: grows the disk, refuses to shrink it.
    t.ok(&[
        "machine",
        "set",
        "m2",
        "--cpus",
        "4",
        "--disk-size",
        "3",
        "--rootful",
    ]);
    let ins: serde_json::Value =
        serde_json::from_str(&t.ok(&["machine", "inspect", "m2"])).unwrap();
    assert_eq!(ins[0]["Resources"]["CPUs"], 4);
    assert_eq!(ins[0]["Rootful"], true);

    // init recorded a connection per machine (the first is the default); a rootful
    // machine's connection logs in as root.
    let conns: serde_json::Value =
        serde_json::from_str(&t.ok(&["system", "connection", "ls", "--format", "json"])).unwrap();
    assert_eq!(conns[0]["Name"], "capsa-default");
    assert_eq!(conns[0]["Default"], true);
    assert_eq!(conns[0]["IsMachine"], true);
    let port = first["Port"].as_u64().unwrap();
    assert_eq!(
        conns[0]["URI"],
        format!("ssh://capsa@127.0.0.1:{port}").as_str()
    );
    assert!(
        conns[0]["Identity"]
            .as_str()
            .unwrap()
            .ends_with("capsa-default/id_ed25519")
    );
    assert_eq!(conns[1]["Name"], "m2");
    assert!(conns[1]["URI"].as_str().unwrap().starts_with("ssh://root@"));
    assert_eq!(
        std::fs::metadata(t.machine_dir("m2").join("data.img"))
            .unwrap()
            .len(),
        3 << 30
    );
    let e = t.fails(&["machine", "set", "m2", "--disk-size", "1"], 125);
    assert!(e.contains("can only grow"), "{e}");

    // Errors: exists, not found, bad name.
    let e = t.fails(&["machine", "init", "m2", "--image", &img_s], 125);
    assert!(e.contains("machine \"m2\" already exists"), "{e}");
    let e = t.fails(&["machine", "start", "nope"], 125);
    assert!(
        e.contains("machine \"nope\" does not exist") && e.contains("hint:"),
        "{e}"
    );
    let e = t.fails(&["machine", "init", "-bad", "--image", &img_s], 125);
    assert!(!e.is_empty());

    let info = t.ok(&["machine", "info", "--format", "json"]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["Host"]["NumberOfMachines"], 2);
    assert_eq!(info["Host"]["Accelerator"], "tcg");

    assert_eq!(t.ok(&["machine", "rm", "m2"]).trim(), "m2");
    assert!(!t.machine_dir("m2").exists());
    assert_eq!(
        t.ok(&["system", "connection", "ls", "-q"]),
        "capsa-default\n",
        "rm removed the machine's connection"
    );
    t.ok(&["machine", "reset", "-f"]);
    assert_eq!(t.ok(&["machine", "ls", "-q"]), "");
}

#[test]
fn missing_and_corrupt_images_are_refused() {
    let t = Machines::new();
    let e = t.fails(&["machine", "init"], 125);
    assert!(e.contains("hint:") && e.contains("--image"), "{e}");
    let e = t.fails(
        &["machine", "init", "--image", "/nonexistent/capsa-guest"],
        125,
    );
    assert!(e.contains("/nonexistent/capsa-guest does not exist"), "{e}");
    let img = fake_image(t.dir.path());
    std::fs::write(img.join("rootfs.img"), b"tampered").unwrap();
    let e = t.fails(
        &["machine", "init", "--image", &img.display().to_string()],
        125,
    );
    assert!(
        e.contains("rootfs.img is corrupt") && e.contains("sha256"),
        "{e}"
    );
    assert!(
        !t.machine_dir("capsa-default").exists(),
        "a failed init leaves nothing"
    );
    // A tar of a good image works.
    std::fs::write(img.join("rootfs.img"), [0u8; 4096]).unwrap();
    let tar = t.dir.path().join("capsa-guest-0.0.1-x86_64.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar).unwrap());
    b.append_dir_all("capsa-guest-0.0.1-x86_64", &img).unwrap();
    b.finish().unwrap();
    drop(b);
    t.ok(&[
        "machine",
        "init",
        "--image",
        &tar.display().to_string(),
        "--disk-size",
        "1",
    ]);
}

#[test]
fn ssh_port_and_socket_in_use_are_clear_errors() {
    let t = Machines::new();
    let img = fake_image(t.dir.path());
    t.ok(&[
        "machine",
        "init",
        "--image",
        &img.display().to_string(),
        "--disk-size",
        "1",
    ]);
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(t.machine_dir("capsa-default").join("config.json")).unwrap(),
    )
    .unwrap();
    let port = cfg["ssh_port"].as_u64().unwrap() as u16;
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let e = t.fails(&["machine", "start"], 125);
    assert!(
        e.contains(&format!("ssh port 127.0.0.1:{port} is in use")) && e.contains("hint:"),
        "{e}"
    );
    drop(holder);

    let sock = t.machine_dir("capsa-default").join("qmp.sock");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let e = t.fails(&["machine", "start"], 125);
    assert!(e.contains("qmp.sock is in use by another process"), "{e}");
}

#[test]
fn machine_ssh_refuses_a_machine_that_is_not_running() {
    let t = Machines::new();
    let img = fake_image(t.dir.path());
    let img = img.display().to_string();
    t.ok(&["machine", "init", "--image", &img, "--disk-size", "1"]);
    t.ok(&["machine", "init", "m2", "--image", &img, "--disk-size", "1"]);
    // A first word that names no machine starts the command: the default machine.
    let e = t.fails(&["machine", "ssh", "uname", "-a"], 125);
    assert!(
        e.contains("Error: vm \"capsa-default\" is not running")
            && e.contains("hint: start it first: capsa machine start\n"),
        "{e}"
    );
    let e = t.fails(&["machine", "ssh", "m2", "echo", "hi"], 125);
    assert!(
        e.contains("Error: vm \"m2\" is not running")
            && e.contains("hint: start it first: capsa machine start m2"),
        "{e}"
    );
}

#[test]
fn full_disk_fails_init_clearly() {
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP full_disk_fails_init_clearly: mounting a small tmpfs needs root");
        return;
    }
    let t = Machines::new();
    let img = fake_image(t.dir.path());
    let mnt = t.dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    // Leave room for the store lock and the image copy (5 pages), not for the data
    // disk's first block.
    let avail = {
        let c = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_bsize as u64
    };
    std::fs::File::create(mnt.join("filler"))
        .unwrap()
        .write_all(&vec![1u8; (avail - 5 * 4096) as usize])
        .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_capsa"))
        .args([
            "machine",
            "init",
            "--image",
            &img.display().to_string(),
            "--disk-size",
            "1",
        ])
        .env("CAPSA_MACHINE_DIR", mnt.join("machines"))
        .output()
        .unwrap();
    let _ = Command::new("umount").arg(&mnt).status();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{e}");
    assert!(e.contains("No space left on device"), "{e}");
    assert!(e.contains("hint:"), "{e}");
}

fn floor_or_skip(t: &Machines, test: &str) -> Option<String> {
    if capsa_core::qemu::find_program("qemu-system-x86_64").is_none()
        || std::env::consts::ARCH != "x86_64"
    {
        println!("SKIP {test}: qemu-system-x86_64 is not installed");
        return None;
    }
    let img = t.dir.path().join("floor");
    if let Err(why) = floor::write_image(&img) {
        println!("SKIP {test}: {why}");
        return None;
    }
    Some(img.display().to_string())
}

fn boots(t: &Machines, name: &str) -> u32 {
    floor::boot_count(&t.machine_dir(name).join("data.img")).unwrap()
}

fn pid_of(t: &Machines, name: &str) -> i32 {
    let s = std::fs::read_to_string(t.machine_dir(name).join("qemu.pid")).unwrap();
    s.split_whitespace().next().unwrap().parse().unwrap()
}

/// Two machines at once; every error a running machine can give; SIGKILL and recovery;
/// data kept across restarts.
#[test]
fn real_machines_lifecycle() {
    let t = Machines::new();
    let Some(img) = floor_or_skip(&t, "real_machines_lifecycle") else {
        return;
    };
    t.ok(&[
        "machine",
        "init",
        "--image",
        &img,
        "--cpus",
        "1",
        "--memory",
        "256",
        "--disk-size",
        "1",
    ]);
    t.ok(&[
        "machine",
        "init",
        "second",
        "--image",
        &img,
        "--cpus",
        "1",
        "--memory",
        "256",
        "--disk-size",
        "1",
    ]);

    // Both start at once (Podman cannot).
    let mut a = t.cmd(&["machine", "start"]).spawn().unwrap();
    let o = t.run(&["machine", "start", "second"]);
    let st = a.wait().unwrap();
    assert!(st.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    for step in ["Starting QEMU", "Waiting for the agent"] {
        assert!(err.contains(step), "{err}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&t.ok(&["machine", "ls", "--format", "json"])).unwrap();
    assert_eq!(json[0]["Running"], true);
    assert_eq!(json[1]["Running"], true);
    assert!(t.ok(&["machine", "ls"]).contains("Currently running"));
    assert_eq!((boots(&t, "capsa-default"), boots(&t, "second")), (1, 1));

    // A second start, and rm without -f, are refused with 125.
    let e = t.fails(&["machine", "start"], 125);
    assert!(
        e.contains("machine \"capsa-default\" is already running"),
        "{e}"
    );
    let e = t.fails(&["machine", "rm", "second"], 125);
    assert!(e.contains("is running") && e.contains("hint:"), "{e}");
    let e = t.fails(&["machine", "set", "second", "--cpus", "2"], 125);
    assert!(e.contains("is running"), "{e}");

    // Stop: the power button powers the guest off; data kept; start again.
    let err = String::from_utf8_lossy(&t.run(&["machine", "stop", "second"]).stderr).into_owned();
    assert!(err.contains("stopped successfully"), "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&t.ok(&["machine", "ls", "--format", "json"])).unwrap();
    assert_eq!(json[1]["Running"], false);
    t.ok(&["machine", "start", "second"]);
    assert_eq!(boots(&t, "second"), 2);

    // SIGKILL QEMU: ls says stopped, start recovers, the data disk is intact.
    let pid = pid_of(&t, "capsa-default");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(500));
    let json: serde_json::Value =
        serde_json::from_str(&t.ok(&["machine", "ls", "--format", "json"])).unwrap();
    assert_eq!(json[0]["Running"], false);
    let o = t.run(&["machine", "start"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("recovering"), "{err}");
    assert_eq!(boots(&t, "capsa-default"), 2);
    let events =
        std::fs::read_to_string(t.machine_dir("capsa-default").join("events.jsonl")).unwrap();
    for e in ["created", "starting", "ready", "crashed"] {
        assert!(
            events.contains(&format!("\"event\":\"{e}\"")),
            "{e}: {events}"
        );
    }

    // rm -f of a running machine, restart, and stop.
    t.ok(&["machine", "rm", "-f", "second"]);
    t.ok(&["machine", "restart"]);
    assert_eq!(boots(&t, "capsa-default"), 3);
    t.ok(&["machine", "stop"]);
    let json: serde_json::Value =
        serde_json::from_str(&t.ok(&["machine", "ls", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["Running"], false);
    assert_ne!(json[0]["LastUp"], "0001-01-01T00:00:00Z");
}

/// A guest that never says it is ready fails its step with the tail of the console, and
/// the VM is not left behind.
#[test]
fn boot_timeout_shows_the_console() {
    let t = Machines::new();
    let Some(_) = floor_or_skip(&t, "boot_timeout_shows_the_console") else {
        return;
    };
    // The floor kernel with an initrd that is not one: the kernel panics, and -no-reboot
    // ends QEMU; or it hangs; either way the step fails with the console's tail.
    let img = t.dir.path().join("bad");
    let (kernel, _) = floor::host_kernel().unwrap();
    image::write_test_image(
        &img,
        "bad",
        "x86_64",
        "panic=-1",
        &[
            ("vmlinuz", &std::fs::read(kernel).unwrap()),
            ("initrd.img", b"garbage"),
            ("rootfs.img", &[0u8; 4096]),
        ],
    )
    .unwrap();
    t.ok(&[
        "machine",
        "init",
        "--image",
        &img.display().to_string(),
        "--memory",
        "256",
        "--disk-size",
        "1",
    ]);
    let o = t
        .cmd(&["machine", "start"])
        .env("CAPSA_MACHINE_BOOT_TIMEOUT", "600")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{e}");
    assert!(e.contains("Waiting for the agent"), "{e}");
    assert!(
        e.contains("last lines of") && e.contains("serial.log"),
        "{e}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&t.ok(&["machine", "ls", "--format", "json"])).unwrap();
    assert_eq!(json[0]["Running"], false);
}

/// The ext4 UUID of a data disk (superblock at 1024, magic at +56, UUID at +104).
fn ext4_uuid(disk: &Path) -> Option<[u8; 16]> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(disk).ok()?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(1024)).ok()?;
    f.read_exact(&mut sb).ok()?;
    (sb[56..58] == [0x53, 0xef]).then(|| sb[104..120].try_into().unwrap())
}

/// End to end with the real guest image (scripts/build-guest-image.sh; its directory in
/// CAPSA_TEST_GUEST_IMAGE): init, start until the agent's Hello, stop through the
/// agent, start again with the data disk kept, kill QEMU, recover.
/// The real guest image (CAPSA_TEST_GUEST_IMAGE), or `None` after a loud skip.
fn guest_image_or_skip(test: &str) -> Option<String> {
    let Some(img) = std::env::var_os("CAPSA_TEST_GUEST_IMAGE") else {
        println!(
            "SKIP {test}: CAPSA_TEST_GUEST_IMAGE is not set (scripts/build-guest-image.sh builds one)"
        );
        return None;
    };
    if capsa_core::qemu::find_program("qemu-system-x86_64").is_none() {
        println!("SKIP {test}: qemu-system-x86_64 is not installed");
        return None;
    }
    Some(img.to_string_lossy().into_owned())
}

/// The fixture busybox as the guest reaches it, or `None` (after a loud skip) when the
/// fixture registry is not running.
fn guest_registry_image() -> Option<String> {
    let Ok(reg) = std::env::var("CAPSA_TEST_REGISTRY") else {
        println!(
            "SKIP the pull and run in the guest: CAPSA_TEST_REGISTRY is not set (scripts/test.sh starts the fixture registry)"
        );
        return None;
    };
    let port = reg.rsplit(':').next().unwrap_or_default();
    Some(format!("10.0.2.2:{port}/busybox:latest"))
}

#[test]
fn real_guest_image_end_to_end() {
    let Some(img) = guest_image_or_skip("real_guest_image_end_to_end") else {
        return;
    };
    let t = Machines::new();
    t.ok(&[
        "machine",
        "init",
        "--image",
        &img,
        "--cpus",
        "2",
        "--memory",
        "1024",
        "--disk-size",
        "2",
    ]);
    let o = t.run(&["machine", "start"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("Installing the SSH key"),
        "the agent's Hello made it ready: {err}"
    );
    assert!(!err.contains("WARN: installing"), "{err}");

    // `machine ssh` runs a command (russh to the guest's dropbear, key made at init).
    let out = t.ok(&["machine", "ssh", "capsa-default", "id", "-un"]);
    assert_eq!(out.trim(), "capsa", "rootless machines log in as capsa");
    // The engine in the guest pulls from the registry on the host (QEMU's user network
    // shows the host's loopback as 10.0.2.2) and runs a container.
    let image = guest_registry_image();
    if let Some(image) = &image {
        let o = t.run(&[
            "machine",
            "ssh",
            "capsa-default",
            "capsa",
            "pull",
            "--tls-verify=false",
            image,
        ]);
        assert!(
            o.status.success(),
            "pull in the guest: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let out = t.ok(&[
            "machine",
            "ssh",
            "capsa-default",
            "capsa",
            "run",
            "--rm",
            image,
            "echo",
            "hello from the guest",
        ]);
        assert_eq!(out.trim(), "hello from the guest");
    }
    let o = t.run(&["machine", "stop"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("the guest powered off"), "{err}");
    let disk = t.machine_dir("capsa-default").join("data.img");
    let uuid = ext4_uuid(&disk).expect("the guest formatted its data disk");

    t.ok(&["machine", "start"]);
    assert_eq!(ext4_uuid(&disk), Some(uuid), "data disk kept");
    if let Some(image) = &image {
        let out = t.ok(&[
            "machine",
            "ssh",
            "capsa-default",
            "capsa",
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ]);
        assert!(
            out.lines().any(|l| l == image),
            "the image pulled before the restart is still there: {out}"
        );
    }
    let pid = pid_of(&t, "capsa-default");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(500));
    let json: serde_json::Value =
        serde_json::from_str(&t.ok(&["machine", "ls", "--format", "json"])).unwrap();
    assert_eq!(json[0]["Running"], false);
    let err = String::from_utf8_lossy(&t.run(&["machine", "start"]).stderr).into_owned();
    assert!(err.contains("started successfully"), "{err}");
    assert_eq!(ext4_uuid(&disk), Some(uuid), "data disk kept after a kill");
    t.ok(&["machine", "stop"]);
}

/// Runs `script` with `sh -c` in the guest through the agent: (exit code, stdout, stderr).
async fn guest_sh(
    client: &capsa_core::transport::Client,
    script: &str,
) -> (Option<i32>, String, String) {
    let mut exec = client
        .exec(capsa_core::transport::ExecOptions::new([
            "sh", "-c", script,
        ]))
        .await
        .unwrap_or_else(|e| panic!("exec {script:?} in the guest: {e}"));
    let out = exec.stdout.as_mut().unwrap().read_to_end().await.unwrap();
    let err = exec.stderr.as_mut().unwrap().read_to_end().await.unwrap();
    let exit = exec.wait().await.unwrap();
    (
        exit.code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// The guest's clock minus the host's, in whole seconds, bounded by the host's clock
/// before and after the exec: `Ok` when within `slack` of it, else the difference.
async fn guest_clock_offset(client: &capsa_core::transport::Client, slack: i64) -> Result<(), i64> {
    let host = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let before = host();
    let (code, out, err) = guest_sh(client, "date +%s").await;
    let after = host();
    assert_eq!(code, Some(0), "date in the guest: {err}");
    let guest: i64 = out.trim().parse().unwrap();
    if guest < before - slack {
        Err(guest - before)
    } else if guest > after + slack {
        Err(guest - after)
    } else {
        Ok(())
    }
}

/// One QMP command on a raw connection (the greeting and negotiation done), skipping
/// the events QEMU sends before its answer.
/// With the real guest image (one boot for both): the guest clock catches up after the
/// VM was paused (what a host's sleep does to it), and `--volume` shares work both ways,
/// read-only ones refuse writes, and a guest path with a space and a comma survives the
/// kernel command line.
#[test]
fn real_guest_time_sync() {
    let Some(img) = guest_image_or_skip("real_guest_time_sync") else {
        return;
    };
    let t = Machines::new();
    let rw = t.dir.path().join("rw share,1");
    let ro = t.dir.path().join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(rw.join("from-host"), "hello from the host\n").unwrap();
    std::fs::write(ro.join("kept"), "read me\n").unwrap();
    let (rw_s, ro_s) = (rw.display().to_string(), ro.display().to_string());
    t.ok(&[
        "machine",
        "init",
        "--image",
        &img,
        "--memory",
        "1024",
        "--disk-size",
        "2",
        "--volume",
        &format!("{rw_s}:{rw_s}"),
        "--volume",
        &format!("{ro_s}:{ro_s}:ro"),
    ]);
    let o = t.run(&["machine", "start"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let inspect: serde_json::Value = serde_json::from_str(&t.ok(&["machine", "inspect"])).unwrap();
    let path =
        |key: &str| PathBuf::from(inspect[0]["ConnectionInfo"][key]["Path"].as_str().unwrap());
    let (agent_sock, qmp_sock) = (path("AgentSocket"), path("QMPSocket"));
    let serial = t.machine_dir("capsa-default").join("serial.log");
    let console = || std::fs::read_to_string(&serial).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let transport = capsa_core::transport::UnixTransport::new(&agent_sock);
        let client = capsa_core::transport::Client::connect(&transport, Default::default())
            .await
            .expect("connect to the agent");

        // Shared folders.
        let q = |p: &Path| format!("'{}'", p.display());
        let (code, out, err) =
            guest_sh(&client, &format!("cat {}", q(&rw.join("from-host")))).await;
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "hello from the host\n"),
            "{err}\n{}",
            console()
        );
        let (code, _, err) = guest_sh(
            &client,
            &format!("echo hello from the guest > {}", q(&rw.join("from-guest"))),
        )
        .await;
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(
            std::fs::read_to_string(rw.join("from-guest")).unwrap(),
            "hello from the guest\n"
        );
        let (code, out, err) = guest_sh(&client, &format!("cat {}", q(&ro.join("kept")))).await;
        assert_eq!((code, out.as_str()), (Some(0), "read me\n"), "{err}");
        let (code, _, err) =
            guest_sh(&client, &format!("echo no > {}", q(&ro.join("refused")))).await;
        assert_ne!(code, Some(0), "a write to the read-only share succeeded");
        assert!(err.contains("Read-only file system"), "{err}");
        assert!(!ro.join("refused").exists());

        // Time: in sync after start (the host's SetTime), behind while paused, caught up
        // by the agent within its period after the VM resumes.
        guest_clock_offset(&client, 2)
            .await
            .unwrap_or_else(|d| panic!("guest clock off by {d} s after start"));
        let mut qmp = capsa_core::qmp::Qmp::connect(&qmp_sock, Duration::from_secs(30)).unwrap();
        qmp.stop().unwrap();
        std::thread::sleep(Duration::from_secs(15));
        qmp.cont().unwrap();
        drop(qmp);
        let resumed = std::time::Instant::now();
        let mut last = Ok(());
        while resumed.elapsed() < Duration::from_secs(30) {
            last = guest_clock_offset(&client, 2).await;
            if last.is_ok() && console().contains("capsa-agent: clock was") {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let log = console();
        assert!(
            last.is_ok(),
            "guest clock still off by {:?} s 30 s after the VM resumed\n{log}",
            last
        );
        let step = log
            .lines()
            .find(|l| l.contains("capsa-agent: clock was"))
            .unwrap_or_else(|| panic!("the agent never stepped the clock\n{log}"));
        assert!(step.contains("behind"), "{step}");
        println!(
            "real_guest_time_sync: {step:?}, in sync {:.1} s after cont",
            resumed.elapsed().as_secs_f64()
        );
    });
}
