//! A small SSH client (russh) for `capsa machine ssh` and the SSH transport: connect with
//! a timeout, pin the guest's host key on first use, log in with the machine's key, and
//! run a command or a shell with the local terminal or pipes, passing its exit status on.
//!
//! The host key is trusted on first use and kept in the machine folder (`known_host`):
//! the guest keeps its host keys on its data disk, so a different key later means another
//! machine answers on that port, or the data disk was replaced.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle, Msg};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelWriteHalf, Disconnect, Sig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::machine::Machine;

/// How long connecting, the key exchange and logging in may take together. A guest under
/// TCG on a loaded host answers slowly, so this is generous.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The exit status for a failure of the connection itself, as ssh(1) uses it.
pub const EXIT_CONNECTION: i32 = 255;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to machine {machine:?} over ssh at {addr}: {source}")]
    Connect {
        machine: String,
        addr: String,
        source: io::Error,
    },
    #[error("machine {machine:?} did not answer over ssh at {addr} within {} s", .timeout.as_secs())]
    Timeout {
        machine: String,
        addr: String,
        timeout: Duration,
    },
    #[error("reading the ssh key {} of machine {machine:?}: {message}", .path.display())]
    Key {
        machine: String,
        path: PathBuf,
        message: String,
    },
    #[error(
        "the ssh host key of machine {machine:?} at {addr} changed: {} pins {pinned}, the server offers {offered}",
        .known_host.display()
    )]
    HostKeyChanged {
        machine: String,
        addr: String,
        known_host: PathBuf,
        pinned: String,
        offered: String,
    },
    #[error("machine {machine:?} at {addr} offered a host certificate, not a key")]
    HostCertificate { machine: String, addr: String },
    #[error("recording the ssh host key of machine {machine:?} in {}: {source}", .path.display())]
    KnownHost {
        machine: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("machine {machine:?} at {addr} refused the ssh key {} for user {user:?}", .identity.display())]
    Rejected {
        machine: String,
        addr: String,
        user: String,
        identity: PathBuf,
    },
    #[error("ssh session with machine {machine:?} at {addr}: {message}")]
    Session {
        machine: String,
        addr: String,
        message: String,
    },
}

impl SshError {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            SshError::Connect { machine, .. } | SshError::Timeout { machine, .. } => format!(
                "is the machine running and booted? `capsa machine start {machine}`; its console log is serial.log in the machine folder"
            ),
            SshError::Key { machine, .. } => format!(
                "the key is made at `capsa machine init`; recreate the machine (`capsa machine rm {machine}`, then `capsa machine init`)"
            ),
            SshError::HostKeyChanged { known_host, .. } => format!(
                "if the machine was recreated or its data disk replaced, remove {} (or run `capsa machine reset`); otherwise another server answers on that port",
                known_host.display()
            ),
            SshError::HostCertificate { .. } => {
                "another ssh server answers on the machine's port: check ssh_port in its config.json".into()
            }
            SshError::KnownHost { .. } => "check the machine folder's permissions and free space".into(),
            SshError::Rejected { machine, .. } => format!(
                "`capsa machine start` installs the key in the guest: restart the machine (`capsa machine stop {machine}`, `capsa machine start {machine}`)"
            ),
            SshError::Session { machine, .. } => format!(
                "the guest's ssh server may have stopped: check serial.log in the machine folder, or restart the machine ({machine})"
            ),
        }
    }
}

/// Where and as whom to log in.
#[derive(Clone, Debug)]
pub struct SshTarget {
    /// The machine's name, for messages.
    pub machine: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The private key, OpenSSH format.
    pub identity: PathBuf,
    /// The pinned host key (`known_host` in the machine folder); written on first use.
    pub known_host: PathBuf,
    pub timeout: Duration,
}

impl SshTarget {
    /// The machine's forwarded port on the loopback address, its user and key.
    pub fn machine(m: &Machine) -> SshTarget {
        SshTarget {
            machine: m.name().to_string(),
            host: "127.0.0.1".into(),
            port: m.config.ssh_port,
            user: m.config.ssh_user().to_string(),
            identity: m.ssh_identity(),
            known_host: known_host_path(&m.dir),
            timeout: CONNECT_TIMEOUT,
        }
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn session_err(&self, e: impl std::fmt::Display) -> SshError {
        SshError::Session {
            machine: self.machine.clone(),
            addr: self.addr(),
            message: e.to_string(),
        }
    }
}

/// The pinned host key inside a machine folder.
pub fn known_host_path(machine_dir: &Path) -> PathBuf {
    machine_dir.join("known_host")
}

/// A host key problem seen by the handler, which can only answer yes or no to russh.
type Verdict = Arc<Mutex<Option<SshError>>>;

struct HostKeyCheck {
    target: SshTarget,
    verdict: Verdict,
    /// Set once the server showed its key: it was up, so a failure is not "booting".
    reached: Arc<std::sync::atomic::AtomicBool>,
}

impl HostKeyCheck {
    fn check(&self, offered: &PublicKeyOrCertificate) -> Result<(), SshError> {
        let t = &self.target;
        let PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            return Err(SshError::HostCertificate {
                machine: t.machine.clone(),
                addr: t.addr(),
            });
        };
        let offered = key.to_openssh().map_err(|e| t.session_err(e))?;
        let known_err = |source| SshError::KnownHost {
            machine: t.machine.clone(),
            path: t.known_host.clone(),
            source,
        };
        match std::fs::read_to_string(&t.known_host) {
            Ok(pinned) => {
                let pinned = pinned.trim();
                // Type and key; a comment after them is not part of the key.
                let same = pinned
                    .split_whitespace()
                    .take(2)
                    .eq(offered.split_whitespace().take(2));
                if same {
                    Ok(())
                } else {
                    Err(SshError::HostKeyChanged {
                        machine: t.machine.clone(),
                        addr: t.addr(),
                        known_host: t.known_host.clone(),
                        pinned: pinned.to_string(),
                        offered,
                    })
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let tmp = t.known_host.with_extension("tmp");
                std::fs::write(&tmp, format!("{offered}\n"))
                    .and_then(|()| std::fs::rename(&tmp, &t.known_host))
                    .map_err(known_err)
            }
            Err(e) => Err(known_err(e)),
        }
    }
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        self.reached
            .store(true, std::sync::atomic::Ordering::Relaxed);
        match self.check(offered) {
            Ok(()) => Ok(true),
            Err(e) => {
                *self.verdict.lock().unwrap() = Some(e);
                Ok(false)
            }
        }
    }
}

/// A logged-in SSH connection to a machine.
pub struct Session {
    handle: Handle<HostKeyCheck>,
    target: SshTarget,
}

/// A pseudo-terminal for the remote command: the local terminal's type and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tty {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

/// What the remote command reads and writes.
pub struct Stdio<I, O, E> {
    pub stdin: I,
    pub stdout: O,
    pub stderr: E,
    /// A pty for the command (stderr then arrives merged into stdout, as with ssh -t).
    pub tty: Option<Tty>,
    /// New terminal sizes (columns, rows) to pass on.
    pub resize: Option<mpsc::UnboundedReceiver<(u32, u32)>>,
}

impl Session {
    pub async fn connect(target: &SshTarget) -> Result<Session, SshError> {
        // Right after `machine start` the guest's sshd may not listen yet: QEMU's port
        // forward accepts and then resets the connection. Such failures (before the
        // server showed a key) are retried until the timeout.
        // The last such failure is the answer when time runs out: it says more than
        // "no answer".
        let last = Mutex::new(None);
        let attempts = async {
            loop {
                match Session::connect_inner(target).await {
                    Err((e, true)) => {
                        *last.lock().unwrap() = Some(e);
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    other => break other.map_err(|(e, _)| e),
                }
            }
        };
        let outcome = tokio::time::timeout(target.timeout, attempts).await;
        match outcome {
            Ok(result) => result,
            Err(_) => Err(last.lock().unwrap().take().unwrap_or(SshError::Timeout {
                machine: target.machine.clone(),
                addr: target.addr(),
                timeout: target.timeout,
            })),
        }
    }

    /// One attempt; the flag says whether the server was not up yet (worth retrying).
    async fn connect_inner(target: &SshTarget) -> Result<Session, (SshError, bool)> {
        let key = russh::keys::load_secret_key(&target.identity, None).map_err(|e| {
            (
                SshError::Key {
                    machine: target.machine.clone(),
                    path: target.identity.clone(),
                    message: e.to_string(),
                },
                false,
            )
        })?;
        let socket = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|source| {
                let booting = matches!(
                    source.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                );
                (
                    SshError::Connect {
                        machine: target.machine.clone(),
                        addr: target.addr(),
                        source,
                    },
                    booting,
                )
            })?;
        let _ = socket.set_nodelay(true);
        let config = Arc::new(client::Config {
            // Dead guests are noticed by the transport's own requests; an idle interactive
            // shell must not be cut.
            inactivity_timeout: None,
            ..Default::default()
        });
        let verdict = Verdict::default();
        let reached = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let check = HostKeyCheck {
            target: target.clone(),
            verdict: verdict.clone(),
            reached: reached.clone(),
        };
        let mut handle = match client::connect_stream(config, socket, check).await {
            Ok(handle) => handle,
            Err(e) => {
                let booting = !reached.load(std::sync::atomic::Ordering::Relaxed);
                let err = verdict
                    .lock()
                    .unwrap()
                    .take()
                    .unwrap_or_else(|| target.session_err(e));
                return Err((err, booting));
            }
        };
        // ed25519 signs without a separate hash; RSA keys would need the server's choice.
        let hash: Option<HashAlg> = None;
        let auth = handle
            .authenticate_publickey(
                target.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await
            .map_err(|e| (target.session_err(e), false))?;
        if !auth.success() {
            return Err((
                SshError::Rejected {
                    machine: target.machine.clone(),
                    addr: target.addr(),
                    user: target.user.clone(),
                    identity: target.identity.clone(),
                },
                false,
            ));
        }
        Ok(Session {
            handle,
            target: target.clone(),
        })
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Runs `command` (a shell when `None`) with the given stdio until the remote side
    /// closes the channel; returns its exit status, 128+N for a signal as a shell reports
    /// it.
    pub async fn run<I, O, E>(
        &self,
        command: Option<&str>,
        io: Stdio<I, O, E>,
    ) -> Result<i32, SshError>
    where
        I: AsyncRead + Unpin + Send + 'static,
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        let t = &self.target;
        let Stdio {
            stdin,
            mut stdout,
            mut stderr,
            tty,
            mut resize,
        } = io;
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| t.session_err(format!("opening a session: {e}")))?;
        if let Some(tty) = &tty {
            channel
                .request_pty(false, &tty.term, tty.cols, tty.rows, 0, 0, &[])
                .await
                .map_err(|e| t.session_err(format!("asking for a terminal: {e}")))?;
        }
        match command {
            Some(command) => channel.exec(true, command).await,
            None => channel.request_shell(true).await,
        }
        .map_err(|e| t.session_err(format!("starting the command: {e}")))?;
        let (mut reader, writer) = channel.split();
        let writer = Arc::new(writer);
        // Its own task: writing into a full window must not stop us reading the output
        // that the remote side may be blocked on.
        let feeder = tokio::spawn(feed(stdin, writer.clone()));
        let mut status = None;
        let result = loop {
            let msg = tokio::select! {
                msg = reader.wait() => msg,
                Some((cols, rows)) = recv(&mut resize) => {
                    let _ = writer.window_change(cols, rows, 0, 0).await;
                    continue;
                }
            };
            match msg {
                Some(ChannelMsg::Data { data }) => {
                    if let Err(e) = write_out(&mut stdout, &data).await {
                        break Err(t.session_err(format!("writing the output: {e}")));
                    }
                }
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    if let Err(e) = write_out(&mut stderr, &data).await {
                        break Err(t.session_err(format!("writing the error output: {e}")));
                    }
                }
                Some(ChannelMsg::Failure) if status.is_none() => {
                    break Err(t.session_err("the guest refused to start the command"));
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status as i32),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    status = Some(128 + signal_number(&signal_name))
                }
                Some(ChannelMsg::Close) | None => {
                    break status
                        .ok_or_else(|| t.session_err("the channel closed without an exit status"));
                }
                Some(_) => {}
            }
        };
        feeder.abort();
        result
    }

    /// Runs `command` (a shell when `None`) on this process's stdin, stdout and stderr: with
    /// a pty and the local terminal in raw mode when stdin is a terminal (restored on every
    /// way out), with pipes otherwise.
    pub async fn run_local(&self, command: Option<&str>) -> Result<i32, SshError> {
        let stdio = |tty, resize| Stdio {
            stdin: tokio::io::stdin(),
            stdout: tokio::io::stdout(),
            stderr: tokio::io::stderr(),
            tty,
            resize,
        };
        let Some(term) = terminal::Terminal::stdin() else {
            return self.run(command, stdio(None, None)).await;
        };
        let (cols, rows) = term.size();
        let tty = Tty {
            term: std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()),
            cols,
            rows,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = terminal::watch_size(tx);
        let raw = term.raw().map_err(|e| {
            self.target
                .session_err(format!("putting the terminal in raw mode: {e}"))
        })?;
        let result = self.run(command, stdio(Some(tty), Some(rx))).await;
        drop(raw);
        if let Some(w) = watcher {
            w.abort();
        }
        result
    }

    /// Opens a channel running `command` and hands it back as a byte stream (its stdin
    /// and stdout); the stream keeps this connection open.
    pub async fn into_stream(self, command: &str) -> Result<SshStream, SshError> {
        let t = &self.target;
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| t.session_err(format!("opening a session: {e}")))?;
        channel
            .exec(false, command)
            .await
            .map_err(|e| t.session_err(format!("starting {command:?}: {e}")))?;
        Ok(SshStream {
            stream: channel.into_stream(),
            _session: self,
        })
    }

    /// Says goodbye to the server (dropping the session closes the socket too).
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}

async fn recv(rx: &mut Option<mpsc::UnboundedReceiver<(u32, u32)>>) -> Option<(u32, u32)> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn write_out<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> io::Result<()> {
    w.write_all(data).await?;
    w.flush().await
}

/// Copies stdin into the channel, then sends end-of-file.
async fn feed<I: AsyncRead + Unpin>(mut stdin: I, writer: Arc<ChannelWriteHalf<Msg>>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if writer.data(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = writer.eof().await;
}

fn signal_number(sig: &Sig) -> i32 {
    match sig {
        Sig::ABRT => libc::SIGABRT,
        Sig::ALRM => libc::SIGALRM,
        Sig::FPE => libc::SIGFPE,
        Sig::HUP => libc::SIGHUP,
        Sig::ILL => libc::SIGILL,
        Sig::INT => libc::SIGINT,
        Sig::KILL => libc::SIGKILL,
        Sig::PIPE => libc::SIGPIPE,
        Sig::QUIT => libc::SIGQUIT,
        Sig::SEGV => libc::SIGSEGV,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => libc::SIGUSR2,
            "BUS" => libc::SIGBUS,
            "SYS" => libc::SIGSYS,
            "TRAP" => libc::SIGTRAP,
            "XCPU" => libc::SIGXCPU,
            "XFSZ" => libc::SIGXFSZ,
            // An unknown name still says "killed by a signal" the way ssh(1) exits.
            _ => EXIT_CONNECTION - 128,
        },
    }
}

/// A byte stream to a remote command (its stdin and stdout) that owns its connection.
pub struct SshStream {
    stream: russh::ChannelStream<Msg>,
    _session: Session,
}

impl AsyncRead for SshStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

mod terminal {
    //! The local terminal: its size, raw mode and resizes.

    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd};
    use tokio::signal::unix::{SignalKind, signal};
    use tokio::sync::mpsc;

    pub struct Terminal {
        fd: BorrowedFd<'static>,
    }

    impl Terminal {
        /// Stdin, when it is a terminal.
        pub fn stdin() -> Option<Terminal> {
            use std::io::IsTerminal;
            let fd = io::stdin();
            fd.is_terminal().then(|| Terminal {
                // SAFETY: fd 0 stays open for the life of the process.
                fd: unsafe { BorrowedFd::borrow_raw(0) },
            })
        }

        /// Columns and rows; 80×24 when the terminal does not say.
        pub fn size(&self) -> (u32, u32) {
            window_size(self.fd.as_raw_fd()).unwrap_or((80, 24))
        }

        /// Raw mode until the guard is dropped: keys go to the guest as typed.
        pub fn raw(&self) -> io::Result<RawGuard> {
            let fd = self.fd.as_raw_fd();
            // SAFETY: termios is plain data, filled in by tcgetattr.
            let mut saved: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: tcgetattr writes into the struct we pass.
            if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut raw = saved;
            // SAFETY: cfmakeraw edits the struct we pass.
            unsafe { libc::cfmakeraw(&mut raw) };
            // SAFETY: tcsetattr reads the struct we pass.
            if unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &raw) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(RawGuard { fd, saved })
        }
    }

    pub struct RawGuard {
        fd: i32,
        saved: libc::termios,
    }

    impl Drop for RawGuard {
        fn drop(&mut self) {
            // SAFETY: restores the settings tcgetattr gave us.
            unsafe { libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved) };
        }
    }

    fn window_size(fd: i32) -> Option<(u32, u32)> {
        // SAFETY: winsize is plain data, filled in by the ioctl.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col as u32, ws.ws_row as u32))
    }

    /// Sends the terminal's new size on every SIGWINCH.
    pub fn watch_size(
        tx: mpsc::UnboundedSender<(u32, u32)>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let mut winch = signal(SignalKind::window_change()).ok()?;
        Some(tokio::spawn(async move {
            while winch.recv().await.is_some() {
                if let Some(size) = window_size(0)
                    && tx.send(size).is_err()
                {
                    return;
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_shell_statuses() {
        assert_eq!(128 + signal_number(&Sig::KILL), 137);
        assert_eq!(128 + signal_number(&Sig::TERM), 143);
        assert_eq!(
            128 + signal_number(&Sig::Custom("USR2".into())),
            128 + libc::SIGUSR2
        );
        assert_eq!(128 + signal_number(&Sig::Custom("NOPE".into())), 255);
    }

    #[test]
    fn host_key_is_pinned_on_first_use_and_checked_after() {
        let d = tempfile::tempdir().unwrap();
        let key = |seed: u8| {
            let k = russh::keys::PrivateKey::from(
                russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]),
            );
            PublicKeyOrCertificate::PublicKey {
                key: k.public_key().clone(),
                hash_alg: None,
            }
        };
        let check = HostKeyCheck {
            target: SshTarget {
                machine: "m1".into(),
                host: "127.0.0.1".into(),
                port: 1,
                user: "capsa".into(),
                identity: d.path().join("id_ed25519"),
                known_host: known_host_path(d.path()),
                timeout: CONNECT_TIMEOUT,
            },
            verdict: Verdict::default(),
            reached: Default::default(),
        };
        check.check(&key(1)).unwrap();
        let pinned = std::fs::read_to_string(d.path().join("known_host")).unwrap();
        assert!(pinned.starts_with("ssh-ed25519 AAAA"), "{pinned}");
        check.check(&key(1)).unwrap();
        let e = check.check(&key(2)).unwrap_err();
        assert!(matches!(e, SshError::HostKeyChanged { .. }), "{e}");
        assert!(e.to_string().contains("\"m1\""), "{e}");
        assert!(e.hint().contains("known_host"), "{}", e.hint());
    }
}
