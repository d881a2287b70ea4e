//! The monitor's command line (docs/internals.md, "The monitor"): every value is a
//! separate argument. Parsed by hand to keep the binary small.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDriver {
    K8sFile,
    JsonFile,
    None,
    /// The container gets the monitor's own fds 0–2.
    Passthrough,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: PathBuf,
    pub runtime_args: Vec<OsString>,
    pub rundir: PathBuf,
    pub log_driver: LogDriver,
    pub log_path: Option<PathBuf>,
    pub terminal: bool,
    pub stdin: bool,
    pub preserve_fds: u32,
    pub sync_fd: Option<i32>,
    pub exit_command: Option<PathBuf>,
    pub exit_args: Vec<OsString>,
    /// The host's `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket): the
    /// container's notifications are relayed to it (docs/systemd.md).
    pub sdnotify_socket: Option<String>,
    /// `--terminal-size ROWSxCOLS`: the pty's size from the start, so the container's
    /// process never sees 0x0 (resize messages come later, over the attach socket).
    pub terminal_size: Option<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    Unknown(String),
    MissingValue(&'static str),
    Missing(&'static str),
    BadValue(&'static str, String),
    Conflict(&'static str),
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::Unknown(a) => write!(f, "unknown argument {a:?}"),
            ArgsError::MissingValue(a) => write!(f, "{a} needs a value"),
            ArgsError::Missing(a) => write!(f, "{a} is required"),
            ArgsError::BadValue(a, v) => write!(f, "invalid value {v:?} for {a}"),
            ArgsError::Conflict(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for ArgsError {}

const FLAGS_WITH_VALUES: &[&str] = &[
    "--id",
    "--bundle",
    "--runtime",
    "--runtime-arg",
    "--rundir",
    "--log-driver",
    "--log-path",
    "--preserve-fds",
    "--sync-fd",
    "--exit-command",
    "--exit-arg",
    "--sdnotify-socket",
    "--terminal-size",
];

fn flag_name(a: &OsStr) -> Option<&'static str> {
    FLAGS_WITH_VALUES
        .iter()
        .chain(["--terminal", "--stdin"].iter())
        .find(|f| OsStr::new(f) == a)
        .copied()
}

fn text(flag: &'static str, v: OsString) -> Result<String, ArgsError> {
    v.into_string()
        .map_err(|v| ArgsError::BadValue(flag, v.to_string_lossy().into_owned()))
}

fn number<T: std::str::FromStr>(flag: &'static str, v: OsString) -> Result<T, ArgsError> {
    let s = text(flag, v)?;
    s.parse().map_err(|_| ArgsError::BadValue(flag, s))
}

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, ArgsError> {
        let mut id = None;
        let mut bundle = None;
        let mut runtime = None;
        let mut runtime_args = Vec::new();
        let mut rundir = None;
        let mut log_driver = None;
        let mut log_path = None;
        let mut terminal = false;
        let mut stdin = false;
        let mut preserve_fds = 0;
        let mut sync_fd = None;
        let mut exit_command = None;
        let mut exit_args = Vec::new();
        let mut sdnotify_socket = None;
        let mut terminal_size = None;

        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let flag = flag_name(&a)
                .ok_or_else(|| ArgsError::Unknown(a.to_string_lossy().into_owned()))?;
            if flag == "--terminal" {
                terminal = true;
                continue;
            }
            if flag == "--stdin" {
                stdin = true;
                continue;
            }
            let v = it.next().ok_or(ArgsError::MissingValue(flag))?;
            match flag {
                "--id" => {
                    let v = text(flag, v)?;
                    if v.is_empty() || v.starts_with('-') || v.contains('/') {
                        return Err(ArgsError::BadValue(flag, v));
                    }
                    id = Some(v)
                }
                "--bundle" => bundle = Some(PathBuf::from(v)),
                "--runtime" => runtime = Some(PathBuf::from(v)),
                "--runtime-arg" => runtime_args.push(v),
                "--rundir" => rundir = Some(PathBuf::from(v)),
                "--log-driver" => {
                    log_driver = Some(match v.to_str() {
                        Some("k8s-file") => LogDriver::K8sFile,
                        Some("json-file") => LogDriver::JsonFile,
                        Some("none") => LogDriver::None,
                        Some("passthrough") => LogDriver::Passthrough,
                        _ => {
                            return Err(ArgsError::BadValue(
                                flag,
                                v.to_string_lossy().into_owned(),
                            ));
                        }
                    })
                }
                "--log-path" => log_path = Some(PathBuf::from(v)),
                "--preserve-fds" => preserve_fds = number(flag, v)?,
                "--sync-fd" => {
                    let fd: i32 = number(flag, v)?;
                    if fd < 3 {
                        return Err(ArgsError::BadValue(flag, fd.to_string()));
                    }
                    sync_fd = Some(fd)
                }
                "--exit-command" => exit_command = Some(PathBuf::from(v)),
                "--exit-arg" => exit_args.push(v),
                "--sdnotify-socket" => {
                    let v = text(flag, v)?;
                    if !crate::notify::valid_address(&v) {
                        return Err(ArgsError::BadValue(flag, v));
                    }
                    sdnotify_socket = Some(v)
                }
                "--terminal-size" => {
                    let v = text(flag, v)?;
                    let size = v
                        .split_once('x')
                        .and_then(|(r, c)| Some((r.parse().ok()?, c.parse().ok()?)));
                    terminal_size = Some(size.ok_or(ArgsError::BadValue(flag, v))?);
                }
                _ => unreachable!("every flag with a value is matched"),
            }
        }

        let log_driver = log_driver.ok_or(ArgsError::Missing("--log-driver"))?;
        let needs_path = matches!(log_driver, LogDriver::K8sFile | LogDriver::JsonFile);
        if needs_path && log_path.is_none() {
            return Err(ArgsError::Conflict(
                "--log-path is required with --log-driver k8s-file and json-file",
            ));
        }
        if log_driver == LogDriver::Passthrough && terminal {
            return Err(ArgsError::Conflict(
                "--log-driver passthrough cannot be used with --terminal",
            ));
        }
        if exit_command.is_none() && !exit_args.is_empty() {
            return Err(ArgsError::Conflict("--exit-arg needs --exit-command"));
        }
        if preserve_fds > 1 << 16 {
            return Err(ArgsError::BadValue(
                "--preserve-fds",
                preserve_fds.to_string(),
            ));
        }
        if let Some(fd) = sync_fd
            && (fd as i64) < 3 + preserve_fds as i64
        {
            return Err(ArgsError::Conflict(
                "--sync-fd must be above the fds kept for the container (3 + --preserve-fds)",
            ));
        }
        Ok(Args {
            id: id.ok_or(ArgsError::Missing("--id"))?,
            bundle: bundle.ok_or(ArgsError::Missing("--bundle"))?,
            runtime: runtime.ok_or(ArgsError::Missing("--runtime"))?,
            runtime_args,
            rundir: rundir.ok_or(ArgsError::Missing("--rundir"))?,
            log_driver,
            log_path,
            terminal,
            stdin,
            preserve_fds,
            sync_fd,
            exit_command,
            exit_args,
            sdnotify_socket,
            terminal_size,
        })
    }

    /// The sync fd of a command line that did not parse, so the failure can still be
    /// reported to the caller waiting on it.
    pub fn sync_fd_of(args: &[OsString]) -> Option<i32> {
        let i = args.iter().position(|a| a == "--sync-fd")?;
        let fd: i32 = args.get(i + 1)?.to_str()?.parse().ok()?;
        (fd >= 3).then_some(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, ArgsError> {
        Args::parse(s.split_whitespace().map(OsString::from))
    }

    const BASE: &str = "--id c1 --bundle /b --runtime /usr/bin/crun --rundir /r";

    #[test]
    fn full_command_line() {
        let a = parse(&format!(
            "{BASE} --runtime-arg --root --runtime-arg /s --log-driver k8s-file \
             --log-path /l --terminal --stdin --preserve-fds 2 --sync-fd 5 \
             --exit-command /bin/capsa --exit-arg container --exit-arg cleanup \
             --sdnotify-socket @sd --terminal-size 33x101"
        ))
        .unwrap();
        assert_eq!(a.id, "c1");
        assert_eq!(a.runtime_args, ["--root", "/s"]);
        assert_eq!(a.log_driver, LogDriver::K8sFile);
        assert_eq!(a.log_path, Some(PathBuf::from("/l")));
        assert!(a.terminal && a.stdin);
        assert_eq!((a.preserve_fds, a.sync_fd), (2, Some(5)));
        assert_eq!(a.exit_command, Some(PathBuf::from("/bin/capsa")));
        assert_eq!(a.exit_args, ["container", "cleanup"]);
        assert_eq!(a.sdnotify_socket.as_deref(), Some("@sd"));
        assert_eq!(a.terminal_size, Some((33, 101)));
    }

    #[test]
    fn minimal_command_line() {
        let a = parse(&format!("{BASE} --log-driver none")).unwrap();
        assert_eq!(a.log_driver, LogDriver::None);
        assert!(!a.terminal && !a.stdin && a.sync_fd.is_none());
        assert_eq!(a.preserve_fds, 0);
    }

    #[test]
    fn rejected_command_lines() {
        let cases: &[(&str, &str)] = &[
            ("--log-driver none", "--id is required"),
            (
                &format!("{BASE} --log-driver k8s-file"),
                "--log-path is required",
            ),
            (&format!("{BASE} --log-driver syslog"), "invalid value"),
            (
                &format!("{BASE} --log-driver none --terminal-size 33by101"),
                "invalid value",
            ),
            (
                &format!("{BASE} --log-driver none --frob"),
                "unknown argument",
            ),
            (&format!("{BASE} --log-driver"), "needs a value"),
            (
                &format!("{BASE} --log-driver passthrough --terminal"),
                "cannot be used with --terminal",
            ),
            (
                &format!("{BASE} --log-driver none --exit-arg x"),
                "needs --exit-command",
            ),
            (
                &format!("{BASE} --log-driver none --preserve-fds 2 --sync-fd 4"),
                "must be above",
            ),
            (
                &format!("{BASE} --log-driver none --sync-fd 1"),
                "invalid value",
            ),
            (
                &format!("{BASE} --log-driver none --sync-fd x"),
                "invalid value",
            ),
            (
                &format!("{BASE} --log-driver none --id a/b"),
                "invalid value",
            ),
            (
                &format!("{BASE} --log-driver none --sdnotify-socket relative/sock"),
                "invalid value",
            ),
        ];
        for (line, want) in cases {
            let e = parse(line).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn sync_fd_of_a_bad_command_line() {
        let a: Vec<OsString> = "--bogus --sync-fd 7"
            .split_whitespace()
            .map(Into::into)
            .collect();
        assert_eq!(Args::sync_fd_of(&a), Some(7));
        assert_eq!(Args::sync_fd_of(&a[..2]), None);
    }
}
