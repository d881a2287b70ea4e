//! Starting a container with the terminal attached (`run` without `-d`, `start -a`),
//! and `attach`: the monitor's socket carries the streams, signals are proxied through
//! the runtime.

use anyhow::{Result, anyhow};
use capsa_engine::Engine;
use capsa_engine::container::attach::{self, AttachOptions, AttachResult};
use capsa_engine::container::lifecycle::ContainerError;

/// Starts `id` (unless it runs already) with its streams on ours; returns the exit code,
/// or `None` when the user detached.
pub async fn start_attached(
    engine: &Engine,
    id: &str,
    stdin: bool,
    tty: bool,
    detach_keys: Option<&str>,
    sig_proxy: bool,
) -> Result<Option<i32>> {
    let mut conn = None;
    let rec = engine
        .start_container(id, &mut |rundir| {
            conn = Some(attach::connect(rundir).map_err(ContainerError::from)?);
            Ok(())
        })
        .map_err(super::container::container_err)?;
    let conn = match conn {
        Some(c) => c,
        None => attach::connect(&engine.container_rundir(&rec.id))
            .map_err(|e| anyhow!("attaching to container {}: {e}", &rec.id[..12]))?,
    };
    pump(engine, &rec.id, conn, stdin, tty, detach_keys, sig_proxy).await
}

/// Attaches to a container that runs already (`attach`); returns its exit code, or
/// `None` when the user detached.
pub async fn attach_running(
    engine: &Engine,
    id: &str,
    stdin: bool,
    tty: bool,
    detach_keys: Option<&str>,
    sig_proxy: bool,
) -> Result<Option<i32>> {
    let conn = attach::connect(&engine.container_rundir(id))
        .map_err(|e| anyhow!("attaching to container {}: {e}", &id[..id.len().min(12)]))?;
    pump(engine, id, conn, stdin, tty, detach_keys, sig_proxy).await
}

async fn pump(
    engine: &Engine,
    id: &str,
    conn: attach::Attach,
    stdin: bool,
    tty: bool,
    detach_keys: Option<&str>,
    sig_proxy: bool,
) -> Result<Option<i32>> {
    let keys = attach::parse_detach_keys(detach_keys.unwrap_or("ctrl-p,ctrl-q"))
        .map_err(|e| anyhow!("invalid --detach-keys: {e}"))?;
    let proxy = if sig_proxy && !tty {
        let rec = engine
            .container(id)
            .map_err(super::container::container_err)?;
        let rt = engine
            .runtime_for(&rec)
            .map_err(super::container::container_err)?;
        let id = id.to_string();
        Some(tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let kinds = [
                (SignalKind::interrupt(), "INT"),
                (SignalKind::terminate(), "TERM"),
                (SignalKind::hangup(), "HUP"),
                (SignalKind::quit(), "QUIT"),
                (SignalKind::user_defined1(), "USR1"),
                (SignalKind::user_defined2(), "USR2"),
            ];
            let mut streams = Vec::new();
            for (k, name) in kinds {
                if let Ok(s) = signal(k) {
                    streams.push((s, name));
                }
            }
            loop {
                let futs = streams.iter_mut().map(|(s, name)| {
                    let name = *name;
                    Box::pin(async move {
                        s.recv().await;
                        name
                    })
                });
                let (name, _, _) = futures_util::future::select_all(futs).await;
                let _ = rt.run("kill", &id, &rt.kill_args(&id, name, false));
            }
        }))
    } else {
        None
    };
    let end = tokio::task::spawn_blocking(move || {
        use std::os::fd::AsFd;
        let input = std::io::stdin();
        // Output goes through a writer thread, so a slow reader of our stdout never
        // stops us draining the monitor's socket (the monitor drops a client that
        // stalls for 2 s).
        let (tx, rx) = std::sync::mpsc::channel::<(bool, Vec<u8>)>();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            for (is_err, data) in rx {
                let w: &mut dyn Write = if is_err { &mut err } else { &mut out };
                if w.write_all(&data).and_then(|()| w.flush()).is_err() {
                    // Our reader went away (a closed pipe): keep draining silently.
                    continue;
                }
            }
        });
        let (mut out, mut err) = (
            Forward {
                tx: tx.clone(),
                is_err: false,
            },
            Forward { tx, is_err: true },
        );
        let result = conn.pump(AttachOptions {
            stdin: stdin.then(|| input.as_fd()),
            stdout: Some(&mut out),
            stderr: Some(&mut err),
            tty,
            detach_keys: keys,
        });
        drop((out, err));
        let _ = writer.join();
        result
    })
    .await
    .map_err(|e| anyhow!("attach: {e}"))?
    .map_err(|e| anyhow!("attach: {e}"))?;
    if let Some(p) = proxy {
        p.abort();
    }
    match end {
        AttachResult::Exited(code) => Ok(Some(code)),
        AttachResult::Detached => Ok(None),
        AttachResult::Closed => {
            let rec = engine
                .wait_container(id, None)
                .map_err(super::container::container_err)?;
            Ok(Some(rec.and_then(|r| r.exit_code).unwrap_or(0)))
        }
    }
}

/// One of the container's streams, handed to the writer thread.
struct Forward {
    tx: std::sync::mpsc::Sender<(bool, Vec<u8>)>,
    is_err: bool,
}

impl std::io::Write for Forward {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .send((self.is_err, buf.to_vec()))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
