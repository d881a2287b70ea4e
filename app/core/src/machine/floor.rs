//! The floor guest: the host's own kernel booting a busybox initramfs, packaged as a
//! guest image. It is what a machine costs with nothing of capsa inside, for
//! `scripts/bench-machine.sh`, and a small real guest for the tests of the machine
//! commands: it prints the readiness line on its console, counts its boots in the
//! first bytes of the data disk (so a test can see data survive), and powers off when
//! the ACPI power button is pressed.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Modules the init loads, in dependency order (Debian builds them as modules).
const MODULES: [&str; 8] = [
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/drivers/acpi/button.ko",
    "kernel/drivers/input/evdev.ko",
];

const INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
read -r up _ </proc/uptime
echo "capsa-init: floor guest up after $up s"
# The bench's floor powers off at once: the least a boot to userspace costs.
read -r cmdline </proc/cmdline
case " $cmdline " in *" capsa.floor=poweroff "*)
  echo "capsa-init: powering off"
  $B poweroff -f ;;
esac
for m in /lib/modules/*.ko; do $B insmod "$m" 2>/dev/null; done
$B sleep 0.2
n=$($B dd if=/dev/vdb bs=16 count=1 2>/dev/null | $B tr -dc 0-9)
n=$((${n:-0} + 1))
echo "$n" | $B dd of=/dev/vdb bs=16 count=1 conv=sync,notrunc 2>/dev/null
$B sync
echo "capsa-init: boot $n"
for e in /sys/class/input/event*; do
  if [ "$($B cat $e/device/name 2>/dev/null)" = "Power Button" ]; then
    echo "capsa-init: power button is ${e##*/}"
    ( $B dd if=/dev/input/${e##*/} bs=24 count=1 >/dev/null 2>&1
      echo "capsa-init: power button"; $B sync; $B poweroff -f ) &
  fi
done
# Ready only once the power button is watched: a stop right after must not be lost.
echo "capsa-agent: ready"
while :; do $B sleep 3600; done
"#;

/// The newest kernel in /boot, or `CAPSA_FLOOR_KERNEL`.
pub fn host_kernel() -> Option<(PathBuf, String)> {
    if let Some(k) = std::env::var_os("CAPSA_FLOOR_KERNEL") {
        let k = PathBuf::from(k);
        let release = k
            .file_name()?
            .to_string_lossy()
            .trim_start_matches("vmlinuz-")
            .to_string();
        return Some((k, release));
    }
    let mut ks: Vec<PathBuf> = fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    ks.sort();
    let k = ks.pop()?;
    let release = k
        .file_name()?
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    Some((k, release))
}

/// A static busybox (Debian's busybox-static installs it as /bin/busybox).
pub fn static_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| fs::read(p).is_ok_and(|b| is_static_elf64(&b)))
}

/// A 64-bit ELF without a PT_INTERP program header needs no dynamic loader.
fn is_static_elf64(b: &[u8]) -> bool {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        b.get(o..o + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

/// Writes the floor guest image into `dir` (a directory in the contract's format).
/// Returns a reason when the host lacks a kernel or a static busybox.
pub fn write_image(dir: &Path) -> Result<(), String> {
    let (kernel, release) =
        host_kernel().ok_or("no kernel in /boot (apt-get install linux-image-amd64)")?;
    let busybox = static_busybox().ok_or("no static busybox (apt-get install busybox-static)")?;
    let kernel_bytes =
        fs::read(&kernel).map_err(|e| format!("reading {}: {e}", kernel.display()))?;
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "lib", "lib/modules"] {
        cpio.dir(d);
    }
    cpio.node("dev/console", 0o020600, 5, 1);
    cpio.file("init", 0o755, INIT.as_bytes());
    let bb = fs::read(&busybox).map_err(|e| format!("reading {}: {e}", busybox.display()))?;
    cpio.file("bin/busybox", 0o755, &bb);
    let moddir = Path::new("/lib/modules").join(&release);
    for (i, m) in MODULES.iter().enumerate() {
        // Prefixed so the init's glob loads them in dependency order.
        let name = Path::new(m)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if let Ok(data) = fs::read(moddir.join(m)) {
            cpio.file(&format!("lib/modules/{i}{i}-{name}"), 0o644, &data);
        }
    }
    let initrd = cpio.finish();
    super::image::write_test_image(
        dir,
        &format!("floor-{release}"),
        std::env::consts::ARCH,
        "quiet panic=-1",
        &[
            ("vmlinuz", &kernel_bytes),
            ("initrd.img", &initrd),
            ("rootfs.img", &[0u8; 4096]),
        ],
    )
    .map_err(|e| format!("writing {}: {e}", dir.display()))
}

/// A newc cpio archive, the initramfs format.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(hdr.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }
    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, data, (0, 0));
    }
    fn node(&mut self, name: &str, mode: u32, major: u32, minor: u32) {
        self.entry(name, mode, &[], (major, minor));
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        let _ = self.out.flush();
        self.out
    }
}

/// The boot counter the floor guest keeps in the data disk's first bytes.
pub fn boot_count(data_disk: &Path) -> io::Result<u32> {
    let mut buf = [0u8; 16];
    use std::io::Read;
    fs::File::open(data_disk)?.read_exact(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf)
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0))
}
