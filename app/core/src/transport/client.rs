//! The host end of the protocol: handshake, then requests, events and stdio streams
//! multiplexed over one connection by a reader and a writer task.
//!
//! Nothing here waits on a dead connection: when the stream ends or fails, every pending
//! request, exec and stream fails at once with [`ClientError::ConnectionLost`], and
//! requests also have a timeout for a guest that hangs without closing the stream.

use super::{BoxStream, Duplex, Transport};
use capsa_proto::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

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

/// Send credit of a stream we write (stdin).
struct Window {
    state: Mutex<(u64, bool)>,
    notify: Notify,
}

impl Window {
    fn new() -> Window {
        Window {
            state: Mutex::new((u64::from(INITIAL_WINDOW), false)),
            notify: Notify::new(),
        }
    }

    fn grant(&self, bytes: u32) {
        self.state.lock().unwrap().0 += u64::from(bytes);
        self.notify.notify_one();
    }

    fn close(&self) {
        self.state.lock().unwrap().1 = true;
        self.notify.notify_one();
    }

    async fn take(&self, max: usize) -> Option<usize> {
        loop {
            {
                let mut state = self.state.lock().unwrap();
                if state.1 {
                    return None;
                }
                if state.0 > 0 {
                    let n = state.0.min(max as u64);
                    state.0 -= n;
                    return Some(n as usize);
                }
            }
            self.notify.notified().await;
        }
    }
}

enum Chunk {
    Data(Vec<u8>),
    Lost(String),
}

#[derive(Default)]
struct State {
    dead: Option<String>,
    pending: HashMap<u32, oneshot::Sender<Response>>,
    /// Streams the agent sends on (stdout, stderr).
    inbound: HashMap<u32, mpsc::UnboundedSender<Chunk>>,
    /// Streams we send on (stdin).
    outbound: HashMap<u32, Arc<Window>>,
    exits: HashMap<u32, oneshot::Sender<ExecExit>>,
}

struct Inner {
    out: mpsc::UnboundedSender<Vec<u8>>,
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
        let bytes = frame
            .to_bytes()
            .map_err(|e| ClientError::ConnectionLost(format!("cannot encode a frame: {e}")))?;
        if let Some(reason) = &self.state.lock().unwrap().dead {
            return Err(ClientError::ConnectionLost(reason.clone()));
        }
        self.out
            .send(bytes)
            .map_err(|_| ClientError::ConnectionLost("writer stopped".into()))
    }

    fn lost(&self) -> ClientError {
        let reason = self.state.lock().unwrap().dead.clone();
        ClientError::ConnectionLost(reason.unwrap_or_else(|| "connection closed".into()))
    }

    /// Marks the connection dead and fails everything waiting on it.
    fn kill(&self, reason: String) {
        let mut state = self.state.lock().unwrap();
        if state.dead.is_some() {
            return;
        }
        tracing::debug!("agent connection lost: {reason}");
        state.dead = Some(reason.clone());
        state.pending.clear();
        state.exits.clear();
        for (_, tx) in state.inbound.drain() {
            let _ = tx.send(Chunk::Lost(reason.clone()));
        }
        for (_, window) in state.outbound.drain() {
            window.close();
        }
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
            Kind::Data => {
                let len = frame.payload.len() as u32;
                let state = self.state.lock().unwrap();
                let delivered = match state.inbound.get(&frame.channel) {
                    Some(tx) => tx.send(Chunk::Data(frame.payload)).is_ok(),
                    None => false,
                };
                drop(state);
                // Nobody reads this stream any more: hand the credit straight back so the
                // process in the guest never blocks on output we discard.
                if !delivered && len > 0 {
                    let _ = self.send(Frame::credit(frame.channel, len));
                }
            }
            Kind::Close => {
                self.state.lock().unwrap().inbound.remove(&frame.channel);
            }
            Kind::Credit => {
                let bytes = frame.credit_bytes().map_err(|e| e.to_string())?;
                let window = self
                    .state
                    .lock()
                    .unwrap()
                    .outbound
                    .get(&frame.channel)
                    .cloned();
                if let Some(window) = window {
                    window.grant(bytes);
                }
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
        let inner = Arc::new(Inner {
            out: out_tx,
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
        self.inner.state.lock().unwrap().dead.is_some()
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
            if let Some(reason) = &state.dead {
                return Err(ClientError::ConnectionLost(reason.clone()));
            }
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
        let mut readers = Vec::new();
        let window = Arc::new(Window::new());
        {
            let mut state = self.inner.state.lock().unwrap();
            if let Some(reason) = &state.dead {
                return Err(ClientError::ConnectionLost(reason.clone()));
            }
            for stream in [stdout, stderr] {
                let (tx, rx) = mpsc::unbounded_channel();
                if let Some(stream) = stream {
                    state.inbound.insert(stream, tx);
                }
                readers.push(stream.map(|id| StreamReader {
                    id,
                    rx,
                    inner: self.inner.clone(),
                    done: false,
                }));
            }
            if let Some(stream) = stdin {
                state.outbound.insert(stream, window.clone());
            }
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
                let mut state = self.inner.state.lock().unwrap();
                state.exits.remove(&id);
                for stream in [stdin, stdout, stderr].into_iter().flatten() {
                    state.inbound.remove(&stream);
                    state.outbound.remove(&stream);
                }
                return Err(match result {
                    Ok(other) => unexpected("exec", other),
                    Err(e) => e,
                });
            }
        };
        let stderr_reader = readers.pop().flatten();
        let stdout_reader = readers.pop().flatten();
        Ok(Exec {
            id,
            pid,
            client: self.clone(),
            stdin: stdin.map(|stream| ExecStdin {
                id: stream,
                window,
                inner: self.inner.clone(),
                closed: false,
            }),
            stdout: stdout_reader,
            stderr: stderr_reader,
            exit: Some(exit_rx),
        })
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
    pub stdin: Option<ExecStdin>,
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

/// An exec's stdin. Dropping it closes the stream (the process reads end of file).
pub struct ExecStdin {
    id: u32,
    window: Arc<Window>,
    inner: Arc<Inner>,
    closed: bool,
}

impl ExecStdin {
    /// Sends all of `data`, waiting for credit when the process reads slowly.
    pub async fn write_all(&mut self, mut data: &[u8]) -> Result<(), ClientError> {
        while !data.is_empty() {
            let Some(n) = self.window.take(data.len().min(MAX_DATA_CHUNK)).await else {
                return Err(self.inner.lost());
            };
            self.inner
                .send(Frame::new(Kind::Data, self.id, data[..n].to_vec()))?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Ends the stream: the process reads end of file.
    pub fn close(mut self) -> Result<(), ClientError> {
        self.closed = true;
        self.finish()
    }

    fn finish(&self) -> Result<(), ClientError> {
        self.inner.state.lock().unwrap().outbound.remove(&self.id);
        self.inner
            .send(Frame::new(Kind::Close, self.id, Vec::new()))
    }
}

impl Drop for ExecStdin {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.finish();
        }
    }
}

/// An output stream of an exec (stdout, stderr, or a tty's output).
pub struct StreamReader {
    id: u32,
    rx: mpsc::UnboundedReceiver<Chunk>,
    inner: Arc<Inner>,
    done: bool,
}

impl StreamReader {
    /// The next chunk, `None` at end of stream. Taking a chunk grants the agent as
    /// much credit again: a reader that stops reading stalls only this stream.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Chunk::Data(data)) => {
                if !data.is_empty() {
                    self.inner
                        .send(Frame::credit(self.id, data.len() as u32))
                        .ok();
                }
                Ok(Some(data))
            }
            Some(Chunk::Lost(reason)) => {
                self.done = true;
                Err(ClientError::ConnectionLost(reason))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
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

impl Drop for StreamReader {
    fn drop(&mut self) {
        // Whatever is buffered was never acknowledged: give its credit back, and from
        // now on the reader task returns credit for this stream as data arrives.
        self.rx.close();
        let mut unread = 0usize;
        while let Ok(chunk) = self.rx.try_recv() {
            if let Chunk::Data(data) = chunk {
                unread += data.len();
            }
        }
        if unread > 0 {
            let _ = self.inner.send(Frame::credit(self.id, unread as u32));
        }
    }
}
