//! One host connection: Hello first, then requests, stdio streams and events multiplexed
//! on the stream until it ends. Processes an exec started belong to the connection: when
//! it ends they are killed, as an SSH session's are.

use crate::exec;
use crate::reaper::Status;
use crate::{Agent, Stop, fdio::FdStream, sys};
use capsa_mux::{Inbound, Mux, OpenError};
use capsa_proto::*;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// What the writer task takes: encoded frames, or a request to report once everything
/// queued before it has been written.
enum Out {
    Bytes(Vec<u8>),
    Flushed(oneshot::Sender<()>),
}

#[derive(Clone)]
struct Outbox(mpsc::UnboundedSender<Out>);

impl Outbox {
    fn frame(&self, frame: Frame) {
        match frame.to_bytes() {
            Ok(bytes) => {
                let _ = self.0.send(Out::Bytes(bytes));
            }
            Err(e) => eprintln!("capsa-agent: dropping a frame: {e}"),
        }
    }

    fn json<T: serde::Serialize>(&self, kind: Kind, channel: u32, value: &T) {
        self.frame(Frame::json(kind, channel, value));
    }

    fn response(&self, id: u32, result: Result<Reply, ErrorBody>) {
        let response = match result {
            Ok(reply) => Response::Ok(reply),
            Err(body) => Response::Error(body),
        };
        self.json(Kind::Response, id, &response);
    }

    async fn flushed(&self) {
        let (tx, rx) = oneshot::channel();
        if self.0.send(Out::Flushed(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// How long `Connect` waits for the guest-side connection.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

struct ExecEntry {
    pid: i32,
    pty: Option<FdStream>,
}

/// Running execs by request id.
type Execs = Arc<Mutex<HashMap<u32, ExecEntry>>>;

struct Session {
    agent: Arc<Agent>,
    out: Outbox,
    hello: Hello,
    negotiated: Option<Negotiated>,
    /// The stdio streams: stdin from the host, stdout and stderr to it.
    mux: Arc<Mux>,
    execs: Execs,
}

pub async fn serve<S>(agent: Arc<Agent>, stream: S)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let writer_task = tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            let mut acks = Vec::new();
            let mut next = Some(first);
            // Coalesce what is already queued into one write.
            while let Some(item) = next {
                match item {
                    Out::Bytes(bytes) => batch.extend_from_slice(&bytes),
                    Out::Flushed(ack) => acks.push(ack),
                }
                next = if batch.len() < 256 * 1024 {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if !batch.is_empty() {
                if let Err(e) = writer.write_all(&batch).await {
                    return e;
                }
                batch.clear();
            }
            if let Err(e) = writer.flush().await {
                return e;
            }
            for ack in acks {
                let _ = ack.send(());
            }
        }
        io::Error::other("session closed")
    });

    let mut hello = Hello::new(
        agent.software.clone(),
        &[
            features::EXEC,
            features::PTY,
            features::SET_TIME,
            features::AUTHORIZED_KEYS,
            features::CONNECT,
        ],
    );
    if agent.pid1 {
        hello.features.push(features::POWER_OFF.to_string());
    }
    hello.guest = Some(sys::guest_info(agent.pid1));
    let out = Outbox(tx);
    out.json(Kind::Hello, 0, &hello);
    agent.announce_ready();

    let mux = Mux::new({
        let out = out.clone();
        move |frame| {
            out.frame(frame);
            Ok(())
        }
    });
    let mut session = Session {
        agent,
        out,
        hello,
        negotiated: None,
        mux,
        execs: Arc::new(Mutex::new(HashMap::new())),
    };
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut writer_task = writer_task;
    let end = loop {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) => break decoder.finish().err().map(|e| e.to_string()),
                Ok(n) => {
                    decoder.feed(&buf[..n]);
                    let mut failed = None;
                    loop {
                        match decoder.next_frame() {
                            Ok(Some(frame)) => {
                                if let Err(reason) = session.handle(frame).await {
                                    failed = Some(reason);
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                failed = Some(e.to_string());
                                break;
                            }
                        }
                    }
                    if failed.is_some() {
                        break failed;
                    }
                }
                Err(e) => break Some(format!("read: {e}")),
            },
            err = &mut writer_task => break Some(match err {
                Ok(e) => format!("write: {e}"),
                Err(e) => format!("writer: {e}"),
            }),
        }
    };
    if let Some(reason) = end {
        eprintln!("capsa-agent: connection closed: {reason}");
    }
    session.close();
    writer_task.abort();
}

impl Session {
    /// Handles one frame; `Err` ends the connection.
    async fn handle(&mut self, frame: Frame) -> Result<(), String> {
        match frame.kind {
            Kind::Hello => {
                let theirs: Hello = match frame.parse() {
                    Ok(hello) => hello,
                    Err(e) => {
                        self.error(0, ErrorCode::Incompatible, e.to_string());
                        return Err(e.to_string());
                    }
                };
                match negotiate(&self.hello, &theirs) {
                    Ok(negotiated) => self.negotiated = Some(negotiated),
                    Err(e) => {
                        self.error(0, ErrorCode::Incompatible, e.to_string());
                        self.out.flushed().await;
                        return Err(e.to_string());
                    }
                }
            }
            Kind::Request => {
                let id = frame.channel;
                if self.negotiated.is_none() {
                    self.out.response(
                        id,
                        Err(ErrorBody::new(
                            ErrorCode::HandshakeRequired,
                            "send Hello before any request",
                        )),
                    );
                    return Ok(());
                }
                match parse_request(&frame.payload) {
                    Ok(request) => self.request(id, request).await,
                    Err(body) => self.out.response(id, Err(body)),
                }
            }
            Kind::Data | Kind::Close | Kind::Credit => {
                self.mux.handle(frame).map_err(|e| e.to_string())?;
            }
            Kind::Error => {
                let message = frame
                    .parse::<ErrorBody>()
                    .map_or_else(|e| e.to_string(), |b| b.to_string());
                eprintln!(
                    "capsa-agent: host reports on channel {}: {message}",
                    frame.channel
                );
            }
            Kind::Response | Kind::Event => {}
            Kind::Unknown(code) => self.error(
                frame.channel,
                ErrorCode::UnknownKind,
                format!("unknown frame kind {code}"),
            ),
        }
        Ok(())
    }

    fn error(&self, channel: u32, code: ErrorCode, message: String) {
        self.out
            .json(Kind::Error, channel, &ErrorBody::new(code, message));
    }

    async fn request(&mut self, id: u32, request: Request) {
        let result = match request {
            Request::Ping => Ok(Reply::Pong),
            Request::Info => {
                let version = self.negotiated.as_ref().map_or(0, |n| n.version);
                Ok(Reply::Info(sys::info(
                    &self.agent.software,
                    version,
                    self.agent.pid1,
                )))
            }
            Request::Exec(req) => self.exec(id, req),
            Request::Connect(req) => match self.connect(id, req) {
                // Answered by the connecting task.
                Ok(()) => return,
                Err(e) => Err(e),
            },
            Request::Resize(req) => {
                let pty = self
                    .execs
                    .lock()
                    .unwrap()
                    .get(&req.exec)
                    .map(|e| e.pty.clone());
                match pty {
                    None => Err(no_such_exec(req.exec)),
                    Some(None) => Err(ErrorBody::new(
                        ErrorCode::BadRequest,
                        format!("exec {} has no tty to resize", req.exec),
                    )),
                    Some(Some(pty)) => exec::resize(&pty, req.size)
                        .map(|()| Reply::Done)
                        .map_err(|e| failed("resize", e)),
                }
            }
            Request::Signal(req) => {
                let pid = self.execs.lock().unwrap().get(&req.exec).map(|e| e.pid);
                match (pid, sys::parse_signal(&req.signal)) {
                    (None, _) => Err(no_such_exec(req.exec)),
                    (_, None) => Err(ErrorBody::new(
                        ErrorCode::BadRequest,
                        format!("unknown signal {:?}", req.signal),
                    )),
                    (Some(pid), Some(sig)) => {
                        // SAFETY: kill has no memory effects.
                        if unsafe { libc::kill(pid, sig) } < 0 {
                            Err(failed("kill", io::Error::last_os_error()))
                        } else {
                            Ok(Reply::Done)
                        }
                    }
                }
            }
            Request::SetTime(req) => sys::set_realtime(req.unix_nanos)
                .map(|()| Reply::Done)
                .map_err(|e| failed("set the clock", e)),
            Request::SetAuthorizedKeys(req) => {
                sys::set_authorized_keys(&self.agent.sysroot, &req.keys)
                    .map(|_| Reply::Done)
                    .map_err(|e| failed("write authorized_keys", e))
            }
            Request::Shutdown => {
                self.out.response(id, Ok(Reply::Done));
                self.out.flushed().await;
                let _ = self.agent.stop.send(Stop::Shutdown);
                return;
            }
        };
        self.out.response(id, result);
    }

    fn exec(&mut self, id: u32, req: ExecRequest) -> Result<Reply, ErrorBody> {
        if self.execs.lock().unwrap().contains_key(&id) {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!("request id {id} is already a running exec"),
            ));
        }
        // Opened before the process starts, so a refused id starts nothing; a stream
        // dropped unused (the process failed to start) is never announced to the host.
        let open_out = |stream: Option<u32>| stream.map(|s| self.mux.open_outbound(s)).transpose();
        let stdout = open_out(req.stdout).map_err(not_opened)?;
        let stderr = open_out(req.stderr).map_err(not_opened)?;
        let stdin = req
            .stdin
            .map(|s| self.mux.open_inbound(s))
            .transpose()
            .map_err(not_opened)?;
        let spawned = exec::spawn(&req)?;
        let pid = spawned.pid;
        let mut pumps = Vec::new();
        for (stream, reader) in [(stdout, spawned.stdout), (stderr, spawned.stderr)] {
            if let (Some(stream), Some(reader)) = (stream, reader) {
                pumps.push(tokio::spawn(stream.pump(reader)));
            }
        }
        if let (Some(stream), Some(writer)) = (stdin, spawned.stdin) {
            tokio::spawn(pump_in(writer, stream));
        }
        self.execs.lock().unwrap().insert(
            id,
            ExecEntry {
                pid,
                pty: spawned.pty,
            },
        );
        tokio::spawn(wait_exit(
            id,
            spawned.status,
            pumps,
            self.execs.clone(),
            self.out.clone(),
        ));
        Ok(Reply::ExecStarted(ExecStarted { pid: pid as u32 }))
    }

    /// Opens the two streams now (a refused id connects nothing) and connects in a task
    /// of its own, so a slow or unanswered connect holds up no other request.
    fn connect(&mut self, id: u32, req: ConnectRequest) -> Result<(), ErrorBody> {
        let recv = self.mux.open_outbound(req.recv).map_err(not_opened)?;
        let send = self.mux.open_inbound(req.send).map_err(not_opened)?;
        let out = self.out.clone();
        tokio::spawn(async move {
            let target = format!("{}:{}", req.host, req.port);
            let connected = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio::net::TcpStream::connect((req.host.as_str(), req.port)),
            )
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer in {} s", CONNECT_TIMEOUT.as_secs()),
                ))
            });
            let tcp = match connected {
                Ok(tcp) => tcp,
                Err(e) => {
                    // The streams are dropped unannounced: the host forgets them too.
                    let code = if e.kind() == io::ErrorKind::ConnectionRefused {
                        ErrorCode::ConnectionRefused
                    } else {
                        ErrorCode::Failed
                    };
                    let body = ErrorBody::new(code, format!("cannot connect to {target}: {e}"));
                    out.response(id, Err(body));
                    return;
                }
            };
            let _ = tcp.set_nodelay(true);
            out.response(id, Ok(Reply::Done));
            let (reader, writer) = tcp.into_split();
            tokio::spawn(pump_in(writer, send));
            recv.pump(reader).await;
        });
        Ok(())
    }

    /// The connection is gone: its processes are killed and its pumps stopped.
    fn close(&mut self) {
        self.mux.fail("session closed");
        for exec in self.execs.lock().unwrap().values() {
            // SAFETY: kill has no memory effects. Each exec leads its own process group.
            unsafe { libc::kill(-exec.pid, libc::SIGKILL) };
        }
    }
}

fn no_such_exec(id: u32) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::NoSuchExec,
        format!("no running exec with id {id}"),
    )
}

fn not_opened(e: OpenError) -> ErrorBody {
    let code = match e {
        OpenError::InUse(_) => ErrorCode::StreamInUse,
        OpenError::Closed(_) => ErrorCode::Failed,
    };
    ErrorBody::new(code, e.to_string())
}

fn failed(what: &str, e: io::Error) -> ErrorBody {
    let code = if e.kind() == io::ErrorKind::PermissionDenied {
        ErrorCode::PermissionDenied
    } else {
        ErrorCode::Failed
    };
    ErrorBody::new(code, format!("cannot {what}: {e}"))
}

/// Data frames → process stdin; credit goes back once bytes are in the pipe, so a
/// process that does not read stalls only its own stream.
async fn pump_in(mut writer: impl AsyncWrite + Unpin, mut stream: Inbound) {
    // An error is the connection lost: the session kills the process.
    while let Ok(Some(data)) = stream.recv().await {
        let written = writer.write_all(&data).await;
        stream.credit(data.len());
        if written.is_err() {
            // The process closed its stdin. Dropping the stream credits whatever else
            // the host sends, so the host is never stuck.
            return;
        }
    }
    let _ = writer.shutdown().await;
}

async fn wait_exit(
    id: u32,
    status: oneshot::Receiver<Status>,
    pumps: Vec<JoinHandle<()>>,
    execs: Execs,
    out: Outbox,
) {
    let status = status.await;
    // The exit event comes after the output: the host has every byte when it sees it.
    for pump in pumps {
        let _ = pump.await;
    }
    execs.lock().unwrap().remove(&id);
    let (code, signal) = match status {
        Ok(Status::Exited(code)) => (Some(code), None),
        Ok(Status::Signaled(sig)) => (None, Some(sig)),
        Err(_) => (None, None),
    };
    out.json(
        Kind::Event,
        0,
        &Event::ExecExit(ExecExit {
            exec: id,
            code,
            signal,
        }),
    );
}
