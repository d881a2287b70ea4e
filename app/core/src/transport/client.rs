//! The host end of the protocol: handshake, then requests, events and stdio streams
//! multiplexed over one connection by a reader and a writer task.
//!
//! Nothing here waits on a dead connection: when the stream ends or fails, every pending
//! request, exec and stream fails at once with [`ClientError::ConnectionLost`], and
//! requests also have a timeout for a guest that hangs without closing the stream.

use super::{BoxStream, Duplex, Transport};
use capsa_mux::{Closed, Inbound, Mux, OpenError, Outbound};
use capsa_proto::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the agent on {transport}: {source}")]
    Connect {
        transport: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no Hello from the agent on {transport} within {after:?}\nhint: the guest may still be booting or its agent failed; see the machine's serial.log"
    )]
    HelloTimeout { transport: String, after: Duration },
    #[error("handshake with the agent failed: {0}")]
    Handshake(String),
    #[error("connection to the agent lost: {0}")]
    ConnectionLost(String),
    #[error("agent did not answer {request} within {after:?}")]
    Timeout {
        request: &'static str,
        after: Duration,
    },
    #[error("agent refused {request}: {body}")]
    Agent {
        request: &'static str,
        body: ErrorBody,
    },
    #[error("the agent does not support {0:?}\nhint: upgrade the machine's image")]
    Unsupported(&'static str),
    #[error("unexpected reply to {request}: {reply:?}")]
    UnexpectedReply {
        request: &'static str,
        reply: Box<Reply>,
    },
}

impl ClientError {
    /// The agent's error code, when the agent refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Agent { body, .. } => Some(body.code),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long to wait for the agent's Hello: covers a guest's boot when the client
    /// connects to QEMU's socket right after starting it.
    pub hello_timeout: Duration,
    /// How long a request may go unanswered (not how long an exec may run).
    pub request_timeout: Duration,
    /// Our name in the Hello.
    pub software: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            hello_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            software: format!("capsa {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// What the host asks for in an exec; stream ids are the client's business.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub cwd: Option<String>,
    pub tty: bool,
    pub size: Option<WinSize>,
    pub stdin: bool,
    pub stdout: bool,
    /// Ignored with a tty (its output is all on stdout).
    pub stderr: bool,
}

impl ExecOptions {
    /// A command with stdout and stderr captured and no stdin.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> ExecOptions {
        ExecOptions {
            argv: argv.into_iter().map(Into::into).collect(),
            stdout: true,
            stderr: true,
            ..ExecOptions::default()
        }
    }
}

#[derive(Default)]
struct State {
    pending: HashMap<u32, oneshot::Sender<Response>>,
    exits: HashMap<u32, oneshot::Sender<ExecExit>>,
}

struct Inner {
    /// The stdio streams, and whether the connection is dead (and why).
    mux: Arc<Mux>,
    state: Mutex<State>,
    next_id: AtomicU32,
    next_stream: AtomicU32,
    events: broadcast::Sender<Event>,
    agent: Hello,
    negotiated: Negotiated,
    options: ClientOptions,
}

impl Inner {
    fn send(&self, frame: Frame) -> Result<(), ClientError> {
        self.mux.send(frame).map_err(lost)
    }

    fn lost(&self) -> ClientError {
        let reason = self.mux.dead();
        ClientError::ConnectionLost(reason.unwrap_or_else(|| "connection closed".into()))
    }

    /// Fails once the connection is dead. Called under the state lock, so whatever the
    /// caller registers after the check is failed by [`Inner::kill`].
    fn check_alive(&self) -> Result<(), ClientError> {
        match self.mux.dead() {
            Some(reason) => Err(ClientError::ConnectionLost(reason)),
            None => Ok(()),
        }
    }

    /// Marks the connection dead and fails everything waiting on it.
    fn kill(&self, reason: String) {
        // The mux first: a request that registers after this sees the connection dead.
        if !self.mux.fail(&reason) {
            return;
        }
        tracing::debug!("agent connection lost: {reason}");
        let mut state = self.state.lock().unwrap();
        state.pending.clear();
        state.exits.clear();
    }

    fn handle(&self, frame: Frame) -> Result<(), String> {
        match frame.kind {
            Kind::Response => {
                let response: Response = frame.parse().map_err(|e| e.to_string())?;
                let tx = self.state.lock().unwrap().pending.remove(&frame.channel);
                if let Some(tx) = tx {
                    let _ = tx.send(response);
                }
            }
            Kind::Event => {
                let event: Event = frame.parse().map_err(|e| e.to_string())?;
                if let Event::ExecExit(exit) = &event {
                    let tx = self.state.lock().unwrap().exits.remove(&exit.exec);
                    if let Some(tx) = tx {
                        let _ = tx.send(exit.clone());
                    }
                }
                let _ = self.events.send(event);
            }
            Kind::Data | Kind::Close | Kind::Credit => {
                self.mux.handle(frame).map_err(|e| e.to_string())?;
            }
            Kind::Error => {
                let body: ErrorBody = frame.parse().map_err(|e| e.to_string())?;
                if body.code == ErrorCode::Incompatible {
                    return Err(format!("agent: {body}"));
                }
                tracing::warn!("agent reports on channel {}: {body}", frame.channel);
            }
            Kind::Hello | Kind::Request => {}
            Kind::Unknown(code) => {
                let body =
                    ErrorBody::new(ErrorCode::UnknownKind, format!("unknown frame kind {code}"));
                let _ = self.send(Frame::json(Kind::Error, frame.channel, &body));
            }
        }
        Ok(())
    }
}

/// A connection to one agent. Cheap to clone; all clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("agent", &self.inner.agent.software)
            .field("version", &self.inner.negotiated.version)
            .finish()
    }
}

impl Client {
    /// Connects through `transport` and performs the handshake.
    pub async fn connect(
        transport: &dyn Transport,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let stream = transport
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                transport: transport.describe(),
                source,
            })?;
        Client::over(stream, &transport.describe(), options).await
    }

    /// Performs the handshake on an already connected stream (`what` names it in errors).
    pub async fn over(
        stream: impl Duplex,
        what: &str,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let stream: BoxStream = Box::new(stream);
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut decoder = Decoder::new();
        let mut buf = vec![0u8; 64 * 1024];

        let read_hello = async {
            loop {
                if let Some(frame) = decoder
                    .next_frame()
                    .map_err(|e| ClientError::Handshake(format!("{what}: {e}")))?
                {
                    return Ok(frame);
                }
                let n = reader.read(&mut buf).await.map_err(|e| {
                    ClientError::ConnectionLost(format!("reading the Hello from {what}: {e}"))
                })?;
                if n == 0 {
                    return Err(ClientError::ConnectionLost(format!(
                        "{what} closed before the agent said Hello"
                    )));
                }
                decoder.feed(&buf[..n]);
            }
        };
        let frame = tokio::time::timeout(options.hello_timeout, read_hello)
            .await
            .map_err(|_| ClientError::HelloTimeout {
                transport: what.to_string(),
                after: options.hello_timeout,
            })??;
        if frame.kind != Kind::Hello {
            return Err(ClientError::Handshake(format!(
                "{what}: expected a Hello frame first, got {:?}",
                frame.kind
            )));
        }
        let agent: Hello = frame
            .parse()
            .map_err(|e| ClientError::Handshake(format!("{what}: {e}")))?;
        let ours = Hello::new(
            options.software.clone(),
            &[
                features::EXEC,
                features::PTY,
                features::SET_TIME,
                features::AUTHORIZED_KEYS,
                features::CONNECT,
                features::POWER_OFF,
            ],
        );
        let negotiated =
            negotiate(&ours, &agent).map_err(|e| ClientError::Handshake(e.to_string()))?;
        let hello_bytes = Frame::json(Kind::Hello, 0, &ours)
            .to_bytes()
            .map_err(|e| ClientError::Handshake(e.to_string()))?;
        writer
            .write_all(&hello_bytes)
            .await
            .map_err(|e| ClientError::ConnectionLost(format!("sending our Hello: {e}")))?;

        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let mux = Mux::new(move |frame: Frame| {
            let bytes = frame
                .to_bytes()
                .map_err(|e| Closed::new(format!("cannot encode a frame: {e}")))?;
            out_tx
                .send(bytes)
                .map_err(|_| Closed::new("writer stopped"))
        });
        let inner = Arc::new(Inner {
            mux,
            state: Mutex::new(State::default()),
            next_id: AtomicU32::new(1),
            next_stream: AtomicU32::new(1),
            events: broadcast::channel(256).0,
            agent,
            negotiated,
            options,
        });

        // The tasks hold a weak reference: dropping every Client ends them.
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while let Some(first) = out_rx.recv().await {
                batch.extend_from_slice(&first);
                while batch.len() < 256 * 1024 {
                    match out_rx.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                let result = writer.write_all(&batch).await;
                batch.clear();
                if let Err(e) = result {
                    if let Some(inner) = weak.upgrade() {
                        inner.kill(format!("write: {e}"));
                    }
                    return;
                }
            }
            // Every Client is gone: end the connection, so the agent ends the session
            // (and its processes) and our reader task sees end of file.
            let _ = writer.shutdown().await;
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let reason = loop {
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => {
                            let Some(inner) = weak.upgrade() else { return };
                            if let Err(reason) = inner.handle(frame) {
                                inner.kill(reason);
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            if let Some(inner) = weak.upgrade() {
                                inner.kill(e.to_string());
                            }
                            return;
                        }
                    }
                }
                match reader.read(&mut buf).await {
                    Ok(0) => break "the agent closed the connection".to_string(),
                    Ok(n) => decoder.feed(&buf[..n]),
                    Err(e) => break format!("read: {e}"),
                }
            };
            if let Some(inner) = weak.upgrade() {
                inner.kill(reason);
            }
        });
        Ok(Client { inner })
    }

    /// The agent's Hello (software, guest facts).
    pub fn agent_hello(&self) -> &Hello {
        &self.inner.agent
    }

    pub fn negotiated(&self) -> &Negotiated {
        &self.inner.negotiated
    }

    /// Whether the connection is known to be dead.
    pub fn is_closed(&self) -> bool {
        self.inner.mux.dead().is_some()
    }

    /// Events from the agent (exec exits included), from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Sends a request and waits for its reply.
    pub async fn request(&self, request: Request) -> Result<Reply, ClientError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.request_with_id(id, request).await
    }

    async fn request_with_id(&self, id: u32, request: Request) -> Result<Reply, ClientError> {
        let name = request.name();
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.inner.state.lock().unwrap();
            self.inner.check_alive()?;
            state.pending.insert(id, tx);
        }
        if let Err(e) = self.inner.send(Frame::json(Kind::Request, id, &request)) {
            self.inner.state.lock().unwrap().pending.remove(&id);
            return Err(e);
        }
        let after = self.inner.options.request_timeout;
        let response = match tokio::time::timeout(after, rx).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => return Err(self.inner.lost()),
            Err(_) => {
                self.inner.state.lock().unwrap().pending.remove(&id);
                return Err(ClientError::Timeout {
                    request: name,
                    after,
                });
            }
        };
        match response {
            Response::Ok(reply) => Ok(reply),
            Response::Error(body) => Err(ClientError::Agent {
                request: name,
                body,
            }),
        }
    }

    fn require(&self, feature: &'static str) -> Result<(), ClientError> {
        if self.inner.negotiated.has(feature) {
            Ok(())
        } else {
            Err(ClientError::Unsupported(feature))
        }
    }

    /// One round trip.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        match self.request(Request::Ping).await? {
            Reply::Pong => Ok(start.elapsed()),
            other => Err(unexpected("ping", other)),
        }
    }

    pub async fn info(&self) -> Result<InfoReply, ClientError> {
        match self.request(Request::Info).await? {
            Reply::Info(info) => Ok(info),
            other => Err(unexpected("info", other)),
        }
    }

    /// Sets the guest clock to `time` (after a host sleep, and at start).
    pub async fn set_time(&self, time: std::time::SystemTime) -> Result<(), ClientError> {
        self.require(features::SET_TIME)?;
        let unix_nanos = time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.done(Request::SetTime(SetTimeRequest { unix_nanos }))
            .await
    }

    pub async fn set_authorized_keys(&self, keys: Vec<String>) -> Result<(), ClientError> {
        self.require(features::AUTHORIZED_KEYS)?;
        self.done(Request::SetAuthorizedKeys(SetAuthorizedKeysRequest {
            keys,
        }))
        .await
    }

    /// Asks the guest to power off cleanly; returns once the agent has accepted.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.done(Request::Shutdown).await
    }

    async fn done(&self, request: Request) -> Result<(), ClientError> {
        let name = request.name();
        match self.request(request).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(name, other)),
        }
    }

    /// Starts a process in the guest. Its streams are on the returned [`Exec`].
    pub async fn exec(&self, options: ExecOptions) -> Result<Exec, ClientError> {
        self.require(features::EXEC)?;
        if options.tty {
            self.require(features::PTY)?;
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut stream_id = || self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let stdin = options.stdin.then(&mut stream_id);
        let stdout = options.stdout.then(&mut stream_id);
        let stderr = (options.stderr && !options.tty).then(&mut stream_id);

        // Registered before the request goes out: output can follow the reply at once.
        let (exit_tx, exit_rx) = oneshot::channel();
        let mux = &self.inner.mux;
        let stdin_stream = stdin.map(|s| mux.open_outbound(s)).transpose();
        let stdout_stream = stdout.map(|s| mux.open_inbound(s)).transpose();
        let stderr_stream = stderr.map(|s| mux.open_inbound(s)).transpose();
        let (stdin_stream, stdout_stream, stderr_stream) = (
            stdin_stream.map_err(not_opened)?,
            stdout_stream.map_err(not_opened)?,
            stderr_stream.map_err(not_opened)?,
        );
        {
            let mut state = self.inner.state.lock().unwrap();
            self.inner.check_alive()?;
            state.exits.insert(id, exit_tx);
        }
        let request = Request::Exec(ExecRequest {
            argv: options.argv,
            env: options.env,
            user: options.user,
            cwd: options.cwd,
            tty: options.tty,
            size: options.size,
            stdin,
            stdout,
            stderr,
        });
        let pid = match self.request_with_id(id, request).await {
            Ok(Reply::ExecStarted(started)) => started.pid,
            result => {
                // The streams are dropped unannounced: the agent never opened them.
                self.inner.state.lock().unwrap().exits.remove(&id);
                return Err(match result {
                    Ok(other) => unexpected("exec", other),
                    Err(e) => e,
                });
            }
        };
        let reader = |stream| StreamReader {
            stream,
            _connection: self.inner.clone(),
        };
        Ok(Exec {
            id,
            pid,
            client: self.clone(),
            stdin: stdin_stream.map(|stream| StreamWriter {
                stream,
                _connection: self.inner.clone(),
            }),
            stdout: stdout_stream.map(reader),
            stderr: stderr_stream.map(reader),
            exit: Some(exit_rx),
        })
    }
}

impl Client {
    /// A TCP connection from the guest to `host:port`, as the guest resolves it (a
    /// published port's listener, a service in the guest): what is written goes to it,
    /// what it sends comes back on the reader. A refused connection is
    /// [`ClientError::Agent`] with [`ErrorCode::ConnectionRefused`].
    pub async fn connect_tcp(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(StreamWriter, StreamReader), ClientError> {
        self.require(features::CONNECT)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let send = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let recv = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let mux = &self.inner.mux;
        // Registered before the request goes out: data can follow the reply at once.
        let writer = mux.open_outbound(send).map_err(not_opened)?;
        let reader = mux.open_inbound(recv).map_err(not_opened)?;
        let request = Request::Connect(ConnectRequest {
            host: host.into(),
            port,
            send,
            recv,
        });
        match self.request_with_id(id, request).await? {
            Reply::Done => Ok((
                StreamWriter {
                    stream: writer,
                    _connection: self.inner.clone(),
                },
                StreamReader {
                    stream: reader,
                    _connection: self.inner.clone(),
                },
            )),
            other => Err(unexpected("connect", other)),
        }
    }
}

fn lost(closed: Closed) -> ClientError {
    ClientError::ConnectionLost(closed.reason)
}

/// Stream ids come from our counter, so only a dead connection refuses one.
fn not_opened(e: OpenError) -> ClientError {
    match e {
        OpenError::Closed(closed) => lost(closed),
        OpenError::InUse(_) => ClientError::ConnectionLost(e.to_string()),
    }
}

fn unexpected(request: &'static str, reply: Reply) -> ClientError {
    ClientError::UnexpectedReply {
        request,
        reply: Box::new(reply),
    }
}

impl std::fmt::Debug for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exec")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// A running process in the guest.
pub struct Exec {
    id: u32,
    pid: u32,
    client: Client,
    pub stdin: Option<StreamWriter>,
    pub stdout: Option<StreamReader>,
    pub stderr: Option<StreamReader>,
    exit: Option<oneshot::Receiver<ExecExit>>,
}

impl Exec {
    /// The process id in the guest.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until the process has exited and its output has been delivered.
    pub async fn wait(&mut self) -> Result<ExecExit, ClientError> {
        let Some(exit) = self.exit.as_mut() else {
            return Err(ClientError::ConnectionLost("exit already taken".into()));
        };
        let result = exit.await;
        self.exit = None;
        result.map_err(|_| self.client.inner.lost())
    }

    pub async fn resize(&self, size: WinSize) -> Result<(), ClientError> {
        self.client
            .done(Request::Resize(ResizeRequest {
                exec: self.id,
                size,
            }))
            .await
    }

    /// Sends a signal by name (`TERM`) or Linux number.
    pub async fn signal(&self, signal: &str) -> Result<(), ClientError> {
        self.client
            .done(Request::Signal(SignalRequest {
                exec: self.id,
                signal: signal.to_string(),
            }))
            .await
    }
}

/// A stream to the guest: an exec's stdin, or what a [`Client::connect_tcp`]
/// connection sends. Dropping it closes the stream (the reader sees end of file).
pub struct StreamWriter {
    stream: Outbound,
    /// Keeps the connection's tasks running while the stream is in use.
    _connection: Arc<Inner>,
}

impl StreamWriter {
    /// Sends all of `data`, waiting for credit when the guest side reads slowly.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(data).await.map_err(lost)
    }

    /// Ends the stream: the guest side reads end of file.
    pub fn close(mut self) -> Result<(), ClientError> {
        self.stream.close().map_err(lost)
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        let _ = self.stream.close();
    }
}

/// An output stream of an exec (stdout, stderr, or a tty's output). Dropping it
/// discards the rest of the output without stalling the process.
pub struct StreamReader {
    stream: Inbound,
    /// Keeps the connection's tasks running while the stream is in use.
    _connection: Arc<Inner>,
}

impl StreamReader {
    /// The next chunk, `None` at end of stream. Taking a chunk grants the agent as
    /// much credit again: a reader that stops reading stalls only this stream.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        let chunk = self.stream.recv().await.map_err(lost)?;
        if let Some(data) = &chunk {
            self.stream.credit(data.len());
        }
        Ok(chunk)
    }

    /// Everything until end of stream.
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.recv().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }
}
