//! The QMP client against a real QEMU (no guest: `-S` keeps the vCPUs stopped), and the
//! QEMU driver booting the floor guest (host kernel + busybox initramfs) under TCG.

use std::path::PathBuf;
use std::time::Duration;

use capsa_core::accel::Accel;
use capsa_core::driver::{StopOutcome, VmDriver, VmSpec, VmStatus};
use capsa_core::process;
use capsa_core::qemu::QemuDriver;
use capsa_core::qmp::{Qmp, QmpEvent};

fn qemu() -> Option<PathBuf> {
    capsa_core::qemu::find_program("qemu-system-x86_64")
}

#[test]
fn qmp_status_powerdown_quit() {
    let Some(qemu) = qemu() else {
        println!("SKIP qmp_status_powerdown_quit: qemu-system-x86_64 is not installed");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("qmp.sock");
    let argv: Vec<String> = vec![
        qemu.display().to_string(),
        "-S".into(),
        "-accel".into(),
        "tcg".into(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-machine".into(),
        "q35".into(),
        "-chardev".into(),
        format!("socket,id=qmp,path={},server=on,wait=off", sock.display()),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
    ];
    let daemon = process::spawn_daemon(
        &argv,
        &d.path().join("qemu.log"),
        &d.path().join("qemu.pid"),
    )
    .unwrap();
    let mut q = Qmp::connect(&sock, Duration::from_secs(20)).expect("QMP connects");
    let st = q.query_status().unwrap();
    assert!(!st.running);
    assert_eq!(st.status, "prelaunch");
    q.system_powerdown().unwrap();
    let ev = q.wait_event(|e| *e == QmpEvent::Powerdown, Duration::from_secs(10));
    assert_eq!(ev, Some(QmpEvent::Powerdown));
    q.quit().unwrap();
    assert!(daemon.wait_gone(Duration::from_secs(10)), "QEMU quits");
    // A second client after QEMU is gone gets a clear error naming the socket.
    let e = Qmp::connect(&sock, Duration::from_millis(100))
        .err()
        .expect("no QEMU, no QMP")
        .to_string();
    assert!(e.contains("qmp.sock"), "{e}");
}

fn floor_spec(dir: &std::path::Path) -> Option<VmSpec> {
    let img = dir.join("image");
    if let Err(why) = capsa_core::machine::floor::write_image(&img) {
        println!("SKIP floor: {why}");
        return None;
    }
    let data = dir.join("data.img");
    std::fs::File::create(&data)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    Some(VmSpec {
        name: "floor".into(),
        arch: std::env::consts::ARCH.into(),
        accel: Accel::Tcg,
        cpus: 1,
        memory_mib: 256,
        kernel: img.join("vmlinuz"),
        initrd: img.join("initrd.img"),
        cmdline: "console=ttyS0 quiet panic=-1".into(),
        rootfs: img.join("rootfs.img"),
        data_disk: data,
        serial_log: dir.join("serial.log"),
        qmp_socket: dir.join("qmp.sock"),
        agent_socket: dir.join("agent.sock"),
        pid_file: dir.join("qemu.pid"),
        vmm_log: dir.join("qemu.log"),
        ssh_port: std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
        shares: vec![],
    })
}

fn wait_for(path: &std::path::Path, needle: &str, timeout: Duration) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(needle)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// The driver's whole cycle on a real guest: start (detached, QMP up), the guest boots
/// and counts its boot on the data disk, the power button powers it off, and a killed
/// QEMU is seen as stopped.
#[test]
fn driver_boots_the_floor_guest_and_powers_it_off() {
    if qemu().is_none() {
        println!(
            "SKIP driver_boots_the_floor_guest_and_powers_it_off: qemu-system-x86_64 is not installed"
        );
        return;
    }
    if std::env::consts::ARCH != "x86_64" {
        println!(
            "SKIP driver_boots_the_floor_guest_and_powers_it_off: the floor guest is x86_64 here"
        );
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let Some(spec) = floor_spec(d.path()) else {
        return;
    };
    let drv = QemuDriver::new();
    assert_eq!(drv.status(&spec), VmStatus::Stopped);
    drv.start(&spec).unwrap();
    assert_eq!(drv.status(&spec), VmStatus::Running);
    let ready = wait_for(
        &spec.serial_log,
        "capsa-agent: ready",
        Duration::from_secs(600),
    );
    assert!(
        ready,
        "floor guest did not boot: {}",
        std::fs::read_to_string(&spec.serial_log).unwrap_or_default()
    );
    let outcome = drv.stop(&spec, Duration::from_secs(120)).unwrap();
    assert_eq!(
        outcome,
        StopOutcome::Powerdown,
        "{}",
        std::fs::read_to_string(&spec.serial_log).unwrap_or_default()
    );
    assert_eq!(drv.status(&spec), VmStatus::Stopped);
    assert_eq!(
        capsa_core::machine::floor::boot_count(&spec.data_disk).unwrap(),
        1
    );
    assert!(!spec.qmp_socket.exists());

    // SIGKILL: the driver sees it stopped; a stop then has nothing to do.
    drv.start(&spec).unwrap();
    let d2 = process::live(&spec.pid_file).unwrap();
    d2.signal(libc::SIGKILL).unwrap();
    assert!(d2.wait_gone(Duration::from_secs(10)));
    assert_eq!(drv.status(&spec), VmStatus::Stopped);
    assert_eq!(
        drv.stop(&spec, Duration::from_secs(1)).unwrap(),
        StopOutcome::AlreadyStopped
    );
}
