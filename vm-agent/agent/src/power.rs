//! PID 1 duties beyond reaping: the ACPI power button and a clean power-off.

use crate::fdio::{async_fd, set_nonblocking};
use crate::{Stop, console};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;

/// The input device that reports the power button pressed by QMP `system_powerdown`:
/// ACPI's, which the kernel names "Power Button" (x86 `q35`), else the first one able
/// to send KEY_POWER (arm `virt` booted with a device tree: the "gpio-keys" device).
/// There is no acpid in the guest: we read its key events.
fn find_power_button() -> Option<String> {
    let entries = fs::read_dir("/sys/class/input").ok()?;
    let mut events: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("event"))
        .collect();
    events.sort();
    let read = |event: &str, what: &str| {
        fs::read_to_string(format!("/sys/class/input/{event}/device/{what}")).unwrap_or_default()
    };
    let found = events
        .iter()
        .find(|e| read(e, "name").trim() == "Power Button")
        .or_else(|| {
            events
                .iter()
                .find(|e| bitmap_has(&read(e, "capabilities/key"), KEY_POWER))
        })?;
    Some(format!("/dev/input/{found}"))
}

/// Whether bit `bit` is set in a sysfs input capability bitmap: hex words of the
/// kernel's `long`, most significant first, leading zero words left out.
fn bitmap_has(bitmap: &str, bit: u16) -> bool {
    let word_bits = usize::BITS as usize;
    let (index, shift) = (bit as usize / word_bits, bit as usize % word_bits);
    bitmap
        .split_whitespace()
        .rev()
        .nth(index)
        .and_then(|w| usize::from_str_radix(w, 16).ok())
        .is_some_and(|w| w >> shift & 1 == 1)
}

/// Sends [`Stop::PowerButton`] when the power button is pressed. Without one (no ACPI,
/// or the evdev module missing) it says so on the console and returns.
pub fn watch_power_button(stop: mpsc::UnboundedSender<Stop>) {
    let Some(path) = find_power_button() else {
        console("capsa-agent: no power button input device; only the Shutdown request powers off");
        return;
    };
    let file = match fs::File::open(&path) {
        Ok(file) => OwnedFd::from(file),
        Err(e) => {
            console(&format!("capsa-agent: cannot open {path}: {e}"));
            return;
        }
    };
    tokio::spawn(async move {
        if let Err(e) = read_events(file, stop).await {
            console(&format!("capsa-agent: reading {path}: {e}"));
        }
    });
}

async fn read_events(file: OwnedFd, stop: mpsc::UnboundedSender<Stop>) -> io::Result<()> {
    set_nonblocking(&file)?;
    let fd = async_fd(file)?;
    let size = std::mem::size_of::<libc::input_event>();
    let mut buf = vec![0u8; size * 16];
    loop {
        let mut guard = fd.readable().await?;
        let read = guard.try_io(|inner| {
            // SAFETY: reading into a buffer we own, of the length we pass.
            let n = unsafe {
                libc::read(
                    inner.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        let Ok(n) = read else { continue };
        let n = n?;
        if n == 0 {
            return Ok(());
        }
        for event in buf[..n].chunks_exact(size) {
            // SAFETY: evdev hands out whole input_event structs; read_unaligned copes with
            // the byte buffer's alignment.
            let event: libc::input_event =
                unsafe { std::ptr::read_unaligned(event.as_ptr().cast()) };
            if event.type_ == EV_KEY && event.code == KEY_POWER && event.value == 1 {
                let _ = stop.send(Stop::PowerButton);
            }
        }
    }
}

const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether a /proc/PID/stat line is a live user process (not a kernel thread, whose
/// existence `kill(-1, 0)` would also report, and not a zombie the reaper is about to
/// collect).
fn is_live_user_process(stat: &str) -> bool {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(state), Some(flags)) = (fields.first(), fields.get(6)) else {
        return false;
    };
    let flags: u64 = flags.parse().unwrap_or(PF_KTHREAD);
    *state != "Z" && *state != "X" && flags & PF_KTHREAD == 0
}

fn anything_left() -> bool {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return false;
        };
        pid != me
            && fs::read_to_string(entry.path().join("stat"))
                .is_ok_and(|stat| is_live_user_process(&stat))
    })
}

async fn wait_for_all(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !anything_left() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !anything_left()
}

/// Stops every process (SIGTERM, then SIGKILL after `grace`), syncs, unmounts every
/// block-device filesystem but the root, and powers off. Only for PID 1.
pub async fn power_off(grace: Duration) -> ! {
    console("capsa-agent: stopping processes");
    // SAFETY: kill has no memory effects; the reaper task reaps what exits.
    unsafe { libc::kill(-1, libc::SIGTERM) };
    if !wait_for_all(grace).await {
        console("capsa-agent: processes still running, sending SIGKILL");
        // SAFETY: as above.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        wait_for_all(Duration::from_secs(2)).await;
    }
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    console("capsa-agent: unmounting filesystems");
    unmount_block_filesystems();
    // SAFETY: as above.
    unsafe { libc::sync() };
    console("capsa-agent: powering off");
    // SAFETY: we are PID 1 and everything is synced.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    // reboot only returns on failure (not PID 1, no CAP_SYS_BOOT).
    console(&format!(
        "capsa-agent: power off failed: {}",
        io::Error::last_os_error()
    ));
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// Mount points of filesystems on block devices (the data disk and anything else on a
/// /dev node), deepest last in mount order, so unmounting in reverse is safe.
fn block_mounts(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = fields.get(4)?;
            let dash = fields.iter().position(|f| *f == "-")?;
            let source = fields.get(dash + 2)?;
            (source.starts_with("/dev/") && *mount_point != "/")
                .then(|| mount_point.replace("\\040", " "))
        })
        .collect()
}

fn unmount_block_filesystems() {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for mount_point in block_mounts(&mountinfo).iter().rev() {
        let Ok(path) = std::ffi::CString::new(mount_point.as_str()) else {
            continue;
        };
        // SAFETY: umount2 reads the NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), 0) } < 0 {
            let err = io::Error::last_os_error();
            console(&format!(
                "capsa-agent: unmount {mount_point}: {err}; detaching"
            ));
            // SAFETY: as above.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn power_key_is_found_in_capability_bitmaps() {
        // gpio-keys with only KEY_POWER (bit 116: word 1, bit 52), as on arm `virt`.
        assert!(super::bitmap_has("10000000000000 0", super::KEY_POWER));
        // An AT keyboard's bitmap (many words) has KEY_POWER too, which is why ACPI's
        // "Power Button" is looked for first; the same without it does not match.
        let keyboard = "402000000 3803078f800d001 feffffdfffefffff fffffffffffffffe";
        assert!(super::bitmap_has(keyboard, super::KEY_POWER));
        let keyboard = "402000000 3803078f800d001 feefffdfffefffff fffffffffffffffe";
        assert!(!super::bitmap_has(keyboard, super::KEY_POWER));
        // A device whose bitmap stops below word 1, or lacks the bit.
        assert!(!super::bitmap_has("ffff", super::KEY_POWER));
        assert!(!super::bitmap_has(
            "ffefffffffffffff ffffffffffffffff",
            super::KEY_POWER
        ));
        assert!(!super::bitmap_has("", super::KEY_POWER));
    }

    #[test]
    fn kernel_threads_and_zombies_do_not_count_as_left() {
        let user = "42 (sleep) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 5 1 1";
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0";
        let zombie = "43 (sh) Z 1 43 43 0 -1 4227084 0 0 0 0 0 0 0 0 20 0 1 0 9 0 0";
        let odd_name = "44 (a) b) R 1 44 44 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 9 0 0";
        assert!(super::is_live_user_process(user));
        assert!(!super::is_live_user_process(kthread));
        assert!(!super::is_live_user_process(zombie));
        assert!(super::is_live_user_process(odd_name));
    }

    #[test]
    fn block_mounts_skip_root_and_virtual_filesystems() {
        let mountinfo = "\
22 1 254:0 / / ro,relatime - erofs /dev/vda ro
23 22 0:5 / /dev rw - devtmpfs devtmpfs rw
24 22 0:21 / /proc rw - proc proc rw
30 22 254:16 / /var/lib/capsa rw - ext4 /dev/vdb rw
31 30 254:16 /x /var/lib/capsa/with\\040space rw - ext4 /dev/vdb rw
";
        assert_eq!(
            super::block_mounts(mountinfo),
            ["/var/lib/capsa", "/var/lib/capsa/with space"]
        );
    }
}
