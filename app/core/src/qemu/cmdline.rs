//! QEMU's command line as data: a [`QemuCmdline`] says what the machine is, `argv()` says
//! it in QEMU's words. Spawning is elsewhere (house style 5); the tables below pin the
//! words for each architecture and accelerator.

use std::path::PathBuf;

use crate::accel::Accel;

/// Name of the virtio-serial port the agent scans for (machine contract, point 4).
pub const AGENT_PORT_NAME: &str = "org.capsa.agent.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "x86_64" | "amd64" => Some(Arch::X86_64),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
    /// The kernel's console device for the machine type below.
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
}

/// A host directory shared with the guest over 9p (virtiofs needs a separate daemon).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Share {
    pub tag: String,
    pub host_path: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCmdline {
    pub name: String,
    pub arch: Arch,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u64,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The kernel command line, complete.
    pub append: String,
    /// vda: read-only root filesystem image.
    pub rootfs: PathBuf,
    /// vdb: the machine's own data disk (raw).
    pub data_disk: PathBuf,
    pub serial_log: PathBuf,
    pub qmp_socket: PathBuf,
    pub agent_socket: PathBuf,
    /// Host port forwarded from 127.0.0.1 to the guest's port 22.
    pub ssh_port: u16,
    pub shares: Vec<Share>,
}

impl QemuCmdline {
    pub fn program(&self) -> String {
        format!("qemu-system-{}", self.arch.as_str())
    }

    /// `-machine`, `-accel`, `-cpu` for the architecture and accelerator.
    fn platform_args(&self) -> [String; 6] {
        let machine = match self.arch {
            Arch::X86_64 => "q35",
            // gic-version=max picks GICv3 where the accelerator has one.
            Arch::Aarch64 => "virt,gic-version=max",
        };
        // Hardware accelerators pass the host CPU through; TCG emulates the richest
        // model it has, so the guest kernel sees a modern CPU either way.
        let cpu = match self.accel {
            Accel::Kvm | Accel::Hvf => "host",
            Accel::Whpx | Accel::Tcg => "max",
        };
        let accel = match self.accel {
            Accel::Tcg => "tcg,thread=multi".to_string(),
            a => a.as_str().to_string(),
        };
        [
            "-machine".into(),
            machine.into(),
            "-accel".into(),
            accel,
            "-cpu".into(),
            cpu.into(),
        ]
    }

    /// The full argv, program first.
    pub fn argv(&self) -> Vec<String> {
        let p = |p: &PathBuf| p.display().to_string();
        let mut a: Vec<String> = vec![self.program()];
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&[
            "-name",
            &format!("capsa-{},process=capsa-{}", self.name, self.name),
        ]);
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        // A guest reboot or panic ends QEMU, so a crash is seen as one.
        push(&["-no-reboot"]);
        a.extend(self.platform_args());
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&[
            "-smp",
            &self.cpus.to_string(),
            "-m",
            &format!("{}M", self.memory_mib),
        ]);
        push(&["-kernel", &p(&self.kernel), "-initrd", &p(&self.initrd)]);
        push(&["-append", &self.append]);
        push(&[
            "-drive",
            &format!(
                "if=none,id=rootfs,file={},format=raw,readonly=on",
                csv(&p(&self.rootfs))
            ),
            "-device",
            "virtio-blk-pci,drive=rootfs",
            "-drive",
            &format!(
                "if=none,id=data,file={},format=raw,discard=unmap",
                csv(&p(&self.data_disk))
            ),
            "-device",
            "virtio-blk-pci,drive=data",
        ]);
        push(&[
            "-netdev",
            &format!("user,id=net0,hostfwd=tcp:127.0.0.1:{}-:22", self.ssh_port),
            // No option ROM: direct kernel boot never network-boots.
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",
        ]);
        push(&["-device", "virtio-rng-pci"]);
        // The guest agent steps its clock to the RTC after a pause (host sleep): the RTC
        // must keep counting host time while the vCPUs are stopped, which clock=host
        // does (clock=vm would stop with them). Spelled out, not left to the defaults.
        push(&["-rtc", "base=utc,clock=host"]);
        push(&[
            "-chardev",
            &format!("file,id=serial,path={}", csv(&p(&self.serial_log))),
            "-serial",
            "chardev:serial",
        ]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=qmp,path={},server=on,wait=off",
                csv(&p(&self.qmp_socket))
            ),
            "-mon",
            "chardev=qmp,mode=control",
        ]);
        push(&[
            "-device",
            "virtio-serial-pci,id=vser0",
            "-chardev",
            &format!(
                "socket,id=agent,path={},server=on,wait=off",
                csv(&p(&self.agent_socket))
            ),
            "-device",
            &format!("virtserialport,bus=vser0.0,chardev=agent,name={AGENT_PORT_NAME}"),
        ]);
        for (i, s) in self.shares.iter().enumerate() {
            let ro = if s.read_only { ",readonly=on" } else { "" };
            push(&[
                "-fsdev",
                &format!(
                    "local,id=fs{i},path={},security_model=none{ro}",
                    csv(&p(&s.host_path))
                ),
                "-device",
                &format!("virtio-9p-pci,fsdev=fs{i},mount_tag={}", csv(&s.tag)),
            ]);
        }
        a
    }
}

/// QEMU's option syntax: a comma inside a value is written twice.
fn csv(s: &str) -> String {
    s.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(arch: Arch, accel: Accel) -> QemuCmdline {
        QemuCmdline {
            name: "m1".into(),
            arch,
            accel,
            cpus: 2,
            memory_mib: 2048,
            kernel: "/m/image/vmlinuz".into(),
            initrd: "/m/image/initrd.img".into(),
            append: "console=ttyS0 capsa.net=qemu-user".into(),
            rootfs: "/m/image/rootfs.img".into(),
            data_disk: "/m/data.img".into(),
            serial_log: "/m/serial.log".into(),
            qmp_socket: "/m/qmp.sock".into(),
            agent_socket: "/m/agent.sock".into(),
            ssh_port: 42022,
            shares: vec![],
        }
    }

    /// The value following `flag` (first occurrence).
    fn after<'a>(argv: &'a [String], flag: &str) -> &'a str {
        let i = argv.iter().position(|a| a == flag).expect(flag);
        &argv[i + 1]
    }

    #[test]
    fn platform_table() {
        use Accel::*;
        use Arch::*;
        let table = [
            // arch, accel, program, -machine, -accel, -cpu
            (X86_64, Kvm, "qemu-system-x86_64", "q35", "kvm", "host"),
            (
                X86_64,
                Tcg,
                "qemu-system-x86_64",
                "q35",
                "tcg,thread=multi",
                "max",
            ),
            (X86_64, Hvf, "qemu-system-x86_64", "q35", "hvf", "host"),
            (X86_64, Whpx, "qemu-system-x86_64", "q35", "whpx", "max"),
            (
                Aarch64,
                Kvm,
                "qemu-system-aarch64",
                "virt,gic-version=max",
                "kvm",
                "host",
            ),
            (
                Aarch64,
                Tcg,
                "qemu-system-aarch64",
                "virt,gic-version=max",
                "tcg,thread=multi",
                "max",
            ),
            (
                Aarch64,
                Hvf,
                "qemu-system-aarch64",
                "virt,gic-version=max",
                "hvf",
                "host",
            ),
            (
                Aarch64,
                Whpx,
                "qemu-system-aarch64",
                "virt,gic-version=max",
                "whpx",
                "max",
            ),
        ];
        for (arch, accel, program, machine, accel_arg, cpu) in table {
            let argv = base(arch, accel).argv();
            let row = format!("{arch:?}/{accel:?}");
            assert_eq!(argv[0], program, "{row}");
            assert_eq!(after(&argv, "-machine"), machine, "{row}");
            assert_eq!(after(&argv, "-accel"), accel_arg, "{row}");
            assert_eq!(after(&argv, "-cpu"), cpu, "{row}");
        }
    }

    #[test]
    fn devices_follow_the_contract() {
        let argv = base(Arch::X86_64, Accel::Tcg).argv();
        let joined = argv.join(" ");
        let expect = [
            "-name capsa-m1,process=capsa-m1",
            "-nodefaults -no-user-config -display none -no-reboot",
            "-smp 2 -m 2048M",
            "-kernel /m/image/vmlinuz -initrd /m/image/initrd.img",
            "-append console=ttyS0 capsa.net=qemu-user",
            // vda read-only rootfs, then vdb data: PCI order gives the names.
            "-drive if=none,id=rootfs,file=/m/image/rootfs.img,format=raw,readonly=on -device virtio-blk-pci,drive=rootfs -drive if=none,id=data,file=/m/data.img,format=raw,discard=unmap -device virtio-blk-pci,drive=data",
            "-netdev user,id=net0,hostfwd=tcp:127.0.0.1:42022-:22 -device virtio-net-pci,netdev=net0,romfile=",
            "-chardev file,id=serial,path=/m/serial.log -serial chardev:serial",
            "-chardev socket,id=qmp,path=/m/qmp.sock,server=on,wait=off -mon chardev=qmp,mode=control",
            "-rtc base=utc,clock=host",
            "-device virtio-serial-pci,id=vser0 -chardev socket,id=agent,path=/m/agent.sock,server=on,wait=off -device virtserialport,bus=vser0.0,chardev=agent,name=org.capsa.agent.0",
        ];
        for e in expect {
            assert!(joined.contains(e), "missing {e:?} in {joined}");
        }
        // The kernel command line stays one argument however many spaces it has.
        assert_eq!(after(&argv, "-append"), "console=ttyS0 capsa.net=qemu-user");
    }

    #[test]
    fn shares_and_commas_in_paths() {
        let mut c = base(Arch::Aarch64, Accel::Hvf);
        c.data_disk = "/odd,dir/data.img".into();
        c.shares = vec![
            Share {
                tag: "vol0".into(),
                host_path: "/home/u/src".into(),
                read_only: false,
            },
            Share {
                tag: "vol1".into(),
                host_path: "/srv/a,b".into(),
                read_only: true,
            },
        ];
        let joined = c.argv().join(" ");
        assert!(
            joined.contains("file=/odd,,dir/data.img,format=raw"),
            "{joined}"
        );
        assert!(joined.contains(
            "-fsdev local,id=fs0,path=/home/u/src,security_model=none -device virtio-9p-pci,fsdev=fs0,mount_tag=vol0"
        ));
        assert!(joined.contains(
            "-fsdev local,id=fs1,path=/srv/a,,b,security_model=none,readonly=on -device virtio-9p-pci,fsdev=fs1,mount_tag=vol1"
        ));
    }
}
