//! Renders engine progress on stderr: bars on a terminal, Podman's plain lines
//! elsewhere, nothing with `-q`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use capsa_engine::image::progress::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct StderrProgress {
    bars: Option<MultiProgress>,
    active: Mutex<HashMap<String, ProgressBar>>,
    quiet: bool,
}

impl StderrProgress {
    pub fn new(quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self {
            bars: (tty && !quiet)
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            active: Mutex::new(HashMap::new()),
            quiet,
        }
    }

    fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(m) => {
                let _ = m.println(s);
            }
            None => {
                let _ = writeln!(std::io::stderr(), "{s}");
            }
        }
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

impl Progress for StderrProgress {
    fn message(&self, msg: &str) {
        self.line(msg);
    }

    fn blob_start(&self, digest: &str, size: Option<u64>) {
        let Some(m) = &self.bars else {
            // Podman's plain output names the whole digest once.
            self.line(&format!("Copying blob {digest}"));
            return;
        };
        let bar = m.add(ProgressBar::new(size.unwrap_or(0)));
        bar.set_style(
            ProgressStyle::with_template(
                "Copying blob {msg} [{bar:30}] {bytes} / {total_bytes} | {binary_bytes_per_sec}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message(short(digest).to_string());
        self.active
            .lock()
            .expect("not poisoned")
            .insert(digest.to_string(), bar);
    }

    fn blob_advance(&self, digest: &str, bytes: u64) {
        if let Some(b) = self.active.lock().expect("not poisoned").get(digest) {
            b.inc(bytes);
        }
    }

    fn blob_done(&self, digest: &str, skipped: bool) {
        let bar = self.active.lock().expect("not poisoned").remove(digest);
        match bar {
            Some(b) => {
                b.finish_and_clear();
                self.line(&format!("Copying blob {} done", short(digest)));
            }
            None if skipped => self.line(&format!(
                "Copying blob {} skipped: already exists",
                short(digest)
            )),
            None => {}
        }
    }
}
