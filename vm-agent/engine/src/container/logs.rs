//! Reading container logs written by the monitor (`k8s-file` and `json-file`, see
//! docs/internals.md), printed the way `podman logs` prints them.
//!
//! Log driver `none` (and `passthrough`) writes no file: the caller checks the
//! container's log driver first and refuses with podman's message ("this container is
//! using the 'none' log driver, cannot read logs") instead of calling in here.
//!
//! A log is a sequence of records; `P` records (partial: no newline yet, or cut at
//! 16 KiB) are joined with the records of the same stream that follow, up to and
//! including the next `F` record, into one [`LogEntry`]. An entry takes the time of its
//! first record. Entries are handed out in the order in which they end; a line still
//! unfinished at the end of the log comes last (`tail` counts it where its last record
//! is).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot read the container log {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the container's log output")]
    Write(#[source] io::Error),
    #[error(
        "invalid time value {0:?}: expected an RFC 3339 time, a date, a Unix timestamp or a duration such as 10m or 1h30m"
    )]
    BadTime(String),
    #[error("unknown log format {0:?}: expected k8s-file or json-file")]
    BadFormat(String),
}

/// The two file formats the monitor writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `<RFC 3339 time> <stdout|stderr> <F|P> <text>`, one record a line (CRI's format).
    K8sFile,
    /// Docker's `{"log":"…","stream":"stdout","time":"…"}`, one record a line.
    JsonFile,
}

impl FromStr for LogFormat {
    type Err = LogError;

    fn from_str(s: &str) -> Result<Self, LogError> {
        match s {
            "k8s-file" => Ok(LogFormat::K8sFile),
            "json-file" => Ok(LogFormat::JsonFile),
            _ => Err(LogError::BadFormat(s.to_string())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }

    fn parse(s: &[u8]) -> Option<Stream> {
        match s {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// One line of output: the joined records of one stream. `data` ends with a newline
/// unless the line was never finished (the container exited, or is still writing it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The time of the entry's first record, in the offset the monitor wrote it with.
    pub time: DateTime<FixedOffset>,
    pub stream: Stream,
    pub data: Vec<u8>,
}

/// What `capsa logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Only the last this many entries that were in the file when reading began
    /// (`Some(0)`: none; with `follow`, only what is written from now on).
    pub tail: Option<usize>,
    /// Only entries at or after this time (applied after `tail`, as podman does).
    pub since: Option<DateTime<Utc>>,
    /// Only entries at or before this time; with `follow`, stop once this time passes.
    pub until: Option<DateTime<Utc>>,
    /// Print each line's time (Go's RFC 3339 with nanoseconds) and a space before it.
    pub timestamps: bool,
    /// Keep reading what is appended until the container has stopped.
    pub follow: bool,
}

/// How often `follow` looks for appended data.
const FOLLOW_POLL: Duration = Duration::from_millis(50);
/// The size of the blocks `tail` reads backwards, and of forward reads.
const BLOCK: usize = 64 * 1024;
/// How far `tail` reads back beyond its last entries' final records for where their
/// lines begin. A stream's line is only known to begin after that stream's previous
/// full record, which may be anywhere (a stream written once); past this, the first
/// line may lose its beginning.
const TAIL_LOOKBACK: u64 = 1024 * 1024;

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    time: DateTime<FixedOffset>,
    stream: Stream,
    partial: bool,
    data: Vec<u8>,
}

fn parse_record(format: LogFormat, line: &[u8]) -> Option<Record> {
    match format {
        LogFormat::K8sFile => parse_k8s(line),
        LogFormat::JsonFile => parse_json(line),
    }
}

fn parse_k8s(line: &[u8]) -> Option<Record> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?;
    let time = DateTime::parse_from_rfc3339(time).ok()?;
    let stream = Stream::parse(fields.next()?)?;
    // CRI allows more tags after a ':'; the first one says whether the line is full.
    let tags = fields.next()?;
    let partial = match tags.split(|&b| b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let mut data = fields.next().unwrap_or_default().to_vec();
    if !partial {
        data.push(b'\n');
    }
    Some(Record {
        time,
        stream,
        partial,
        data,
    })
}

fn parse_json(line: &[u8]) -> Option<Record> {
    #[derive(serde::Deserialize)]
    struct Json {
        log: String,
        stream: String,
        time: String,
    }
    let j: Json = serde_json::from_slice(line).ok()?;
    let time = DateTime::parse_from_rfc3339(&j.time).ok()?;
    let stream = Stream::parse(j.stream.as_bytes())?;
    Some(Record {
        time,
        stream,
        partial: !j.log.ends_with('\n'),
        data: j.log.into_bytes(),
    })
}

/// Joins partial records per stream. Entries carry the file offset where their last
/// record ends, which orders them.
#[derive(Default)]
struct Joiner {
    pending: [Option<(u64, LogEntry)>; 2],
}

impl Joiner {
    fn push(&mut self, r: Record, end: u64) -> Option<(u64, LogEntry)> {
        let slot = &mut self.pending[r.stream.index()];
        match slot {
            Some((at, e)) => {
                e.data.extend_from_slice(&r.data);
                *at = end;
            }
            None => {
                *slot = Some((
                    end,
                    LogEntry {
                        time: r.time,
                        stream: r.stream,
                        data: r.data,
                    },
                ));
            }
        }
        if r.partial { None } else { slot.take() }
    }

    /// The unfinished lines, in the order in which their last records were written.
    fn flush(&mut self) -> Vec<(u64, LogEntry)> {
        let mut v: Vec<_> = self.pending.iter_mut().filter_map(Option::take).collect();
        v.sort_by_key(|(end, _)| *end);
        v
    }
}

/// Reads the log forwards from an offset, keeping an unfinished last line for later.
struct Reader<'p> {
    path: &'p Path,
    file: File,
    format: LogFormat,
    offset: u64,
    line: Vec<u8>,
    joiner: Joiner,
    bad_lines: u64,
    buf: Vec<u8>,
}

type Emit<'e> = dyn FnMut(u64, LogEntry) -> Result<(), LogError> + 'e;

impl<'p> Reader<'p> {
    fn read_err(&self, source: io::Error) -> LogError {
        LogError::Read {
            path: self.path.to_path_buf(),
            source,
        }
    }

    /// One line of the file, which ends at offset `end`.
    fn handle_line(&mut self, line: &[u8], end: u64, emit: &mut Emit<'_>) -> Result<(), LogError> {
        if line.is_empty() {
            return Ok(());
        }
        match parse_record(self.format, line) {
            Some(r) => {
                if let Some((end, e)) = self.joiner.push(r, end) {
                    emit(end, e)?;
                }
            }
            None => {
                self.bad_lines += 1;
                if self.bad_lines == 1 {
                    tracing::warn!(
                        path = %self.path.display(),
                        line = %String::from_utf8_lossy(&line[..line.len().min(200)]),
                        "skipping malformed lines in the container log"
                    );
                }
            }
        }
        Ok(())
    }

    /// Reads whole lines up to `limit` (or the end of the file), emitting finished
    /// entries. Returns whether anything was read.
    fn read(&mut self, limit: Option<u64>, emit: &mut Emit<'_>) -> Result<bool, LogError> {
        let mut any = false;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(BLOCK, 0);
        let result = loop {
            let max = match limit {
                Some(l) => (l.saturating_sub(self.offset)).min(BLOCK as u64) as usize,
                None => BLOCK,
            };
            if max == 0 {
                break Ok(any);
            }
            let n = match self.file.read_at(&mut buf[..max], self.offset) {
                Ok(0) => break Ok(any),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(self.read_err(e)),
            };
            any = true;
            let base = self.offset;
            self.offset += n as u64;
            if let Err(e) = self.split(&buf[..n], base, emit) {
                break Err(e);
            }
        };
        self.buf = buf;
        result
    }

    /// Splits bytes read at offset `base` into lines.
    fn split(
        &mut self,
        mut chunk: &[u8],
        mut base: u64,
        emit: &mut Emit<'_>,
    ) -> Result<(), LogError> {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            let end = base + i as u64;
            if self.line.is_empty() {
                self.handle_line(&chunk[..i], end, emit)?;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[..i]);
                self.handle_line(&line, end, emit)?;
                line.clear();
                self.line = line;
            }
            chunk = &chunk[i + 1..];
            base = end + 1;
        }
        self.line.extend_from_slice(chunk);
        Ok(())
    }

    /// The end of the log: a last line without its newline is parsed as it is, and
    /// unfinished entries are emitted.
    fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), LogError> {
        let line = std::mem::take(&mut self.line);
        self.handle_line(&line, self.offset, emit)?;
        for (end, e) in self.joiner.flush() {
            emit(end, e)?;
        }
        if self.bad_lines > 1 {
            tracing::debug!(path = %self.path.display(), count = self.bad_lines, "malformed log lines skipped");
        }
        Ok(())
    }

    /// Starts over when the file was truncated under us.
    fn check_truncated(&mut self) -> Result<(), LogError> {
        let len = self.file.metadata().map_err(|e| self.read_err(e))?.len();
        if len < self.offset {
            tracing::warn!(path = %self.path.display(), "the container log was truncated; reading it from the start");
            self.offset = 0;
            self.line.clear();
            self.joiner = Joiner::default();
        }
        Ok(())
    }
}

/// Counts entries backwards from the end of the file to find where the last `want`
/// entries begin. An entry is known to be whole once the `F` record of its stream
/// that precedes it has been seen.
struct TailScan {
    format: LogFormat,
    want: usize,
    found: usize,
    incomplete: usize,
    open: [Option<usize>; 2],
}

impl TailScan {
    fn begin(&mut self, s: usize) {
        if self.found < self.want {
            self.incomplete += 1;
        }
        self.open[s] = Some(self.found);
        self.found += 1;
    }

    /// Takes the line before the ones already seen; true when reading forwards from
    /// just after it yields the last `want` entries whole.
    fn feed(&mut self, line: &[u8]) -> bool {
        let Some(r) = parse_record(self.format, line) else {
            return false;
        };
        let s = r.stream.index();
        match self.open[s] {
            Some(_) if r.partial => {}
            Some(e) => {
                if e < self.want {
                    self.incomplete -= 1;
                    if self.incomplete == 0 && self.found >= self.want {
                        return true;
                    }
                }
                self.begin(s);
            }
            None => self.begin(s),
        }
        false
    }
}

/// The offset from which reading forwards yields (at least) the last `n` entries of
/// the file's first `end` bytes, found by reading backwards in blocks of `block` bytes
/// so that a big log is not read from its start. A last line without its newline is
/// left to the forward reader. See [`TAIL_LOOKBACK`] for the one approximation.
fn tail_start(file: &File, format: LogFormat, end: u64, n: usize, block: usize) -> io::Result<u64> {
    if n == 0 {
        return Ok(end);
    }
    let mut scan = TailScan {
        format,
        want: n,
        found: 0,
        incomplete: 0,
        open: [None, None],
    };
    // buf holds the bytes from `pos` on that have not been looked at yet.
    let mut pos = end;
    let mut buf: Vec<u8> = Vec::new();
    let mut fragment = true;
    // Where the scan had seen enough final records, if it has.
    let mut enough_at: Option<u64> = None;
    loop {
        let mut line_end = buf.len();
        loop {
            let nl = buf[..line_end].iter().rposition(|&b| b == b'\n');
            let line_start = match nl {
                Some(i) => i + 1,
                None if pos == 0 => 0,
                None => break,
            };
            let after = pos + line_end as u64 + 1;
            if fragment {
                fragment = false;
            } else if enough_at.is_some_and(|at| at - after > TAIL_LOOKBACK)
                || scan.feed(&buf[line_start..line_end])
            {
                return Ok(after);
            } else if enough_at.is_none() && scan.found >= n {
                enough_at = Some(pos + line_start as u64);
            }
            match nl {
                Some(i) => line_end = i,
                None => return Ok(0),
            }
        }
        buf.truncate(line_end);
        let start = pos.saturating_sub(block as u64);
        let mut chunk = vec![0; (pos - start) as usize];
        file.read_exact_at(&mut chunk, start)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        pos = start;
    }
}

/// Reads a container's log and hands each entry that passes the options' filters to
/// `on_entry`, oldest first. With `follow`, it keeps reading what the monitor appends
/// until `stopped` returns true (checked every 50 ms), then reads what is left and
/// returns. `timestamps` is for the caller to apply.
pub fn read_log(
    path: &Path,
    format: LogFormat,
    opts: &LogOptions,
    mut stopped: impl FnMut() -> bool,
    mut on_entry: impl FnMut(LogEntry) -> io::Result<()>,
) -> Result<(), LogError> {
    read_log_blocks(
        path,
        format,
        opts,
        &mut stopped,
        &mut |_, e| on_entry(e),
        BLOCK,
    )
}

fn read_log_blocks(
    path: &Path,
    format: LogFormat,
    opts: &LogOptions,
    stopped: &mut dyn FnMut() -> bool,
    on_entry: &mut dyn FnMut(u64, LogEntry) -> io::Result<()>,
    block: usize,
) -> Result<(), LogError> {
    let read_err = |source| LogError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let end = file.metadata().map_err(read_err)?.len();
    let start = match opts.tail {
        Some(n) => tail_start(&file, format, end, n, block).map_err(read_err)?,
        None => 0,
    };
    let wanted = |e: &LogEntry| {
        opts.since.is_none_or(|s| e.time >= s) && opts.until.is_none_or(|u| e.time <= u)
    };
    let mut out = |end: u64, e: LogEntry| -> Result<(), LogError> {
        if wanted(&e) {
            on_entry(end, e).map_err(LogError::Write)?;
        }
        Ok(())
    };
    let mut reader = Reader {
        path,
        file,
        format,
        offset: start,
        line: Vec::new(),
        joiner: Joiner::default(),
        bad_lines: 0,
        buf: Vec::new(),
    };

    // What was in the file when we began, with the tail applied.
    match opts.tail {
        Some(n) => {
            // Kept in the order in which entries end, as tail_start counts them: an
            // unfinished line at the end of the file takes its place among the others.
            let mut last: VecDeque<(u64, LogEntry)> = VecDeque::with_capacity(n.min(4096));
            let mut keep = |at: u64, e: LogEntry| -> Result<(), LogError> {
                let i = last
                    .iter()
                    .rposition(|(a, _)| *a <= at)
                    .map_or(0, |i| i + 1);
                last.insert(i, (at, e));
                if last.len() > n {
                    last.pop_front();
                }
                Ok(())
            };
            reader.read(Some(end), &mut keep)?;
            if !opts.follow {
                reader.finish(&mut keep)?;
            }
            for (at, e) in last {
                out(at, e)?;
            }
        }
        None => {
            reader.read(Some(end), &mut out)?;
            if !opts.follow {
                reader.finish(&mut out)?;
            }
        }
    }
    if !opts.follow {
        return Ok(());
    }

    loop {
        // Asked before reading, so that everything written before the container
        // stopped is read below.
        let done = stopped() || opts.until.is_some_and(|u| Utc::now() > u);
        reader.check_truncated()?;
        let any = reader.read(None, &mut out)?;
        if done {
            return reader.finish(&mut out);
        }
        if !any {
            std::thread::sleep(FOLLOW_POLL);
        }
    }
}

/// Prints a container's log as `podman logs` does: stdout entries to `stdout`, stderr
/// entries to `stderr`, each preceded by its time and a space with `timestamps`; a line
/// that was never finished is printed without a newline. See [`read_log`] for `follow`.
pub fn write_logs(
    path: &Path,
    format: LogFormat,
    opts: &LogOptions,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    stopped: impl FnMut() -> bool,
) -> Result<(), LogError> {
    let timestamps = opts.timestamps;
    let follow = opts.follow;
    read_log(path, format, opts, stopped, |e| {
        let w: &mut dyn Write = match e.stream {
            Stream::Stdout => &mut *stdout,
            Stream::Stderr => &mut *stderr,
        };
        if timestamps {
            let mut t = format_timestamp(&e.time);
            t.push(' ');
            w.write_all(t.as_bytes())?;
        }
        w.write_all(&e.data)?;
        if follow { w.flush() } else { Ok(()) }
    })?;
    stdout.flush().map_err(LogError::Write)?;
    stderr.flush().map_err(LogError::Write)
}

/// A time as Go's `time.RFC3339Nano` prints it (what `podman logs -t` shows): trailing
/// zeros of the fraction dropped, `Z` for UTC.
pub fn format_timestamp(t: &DateTime<FixedOffset>) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    if t.offset().local_minus_utc() == 0 {
        s.push('Z');
    } else {
        s.push_str(&t.format("%:z").to_string());
    }
    s
}

/// Parses a `--since`/`--until` value as podman and docker accept it: a Go duration
/// before `now` (`10m`, `1h30m`, `2.5s`), an RFC 3339 time with or without its zone
/// or seconds (`2024-05-01T10:00:00.5Z`, `2024-05-01T10:00`, local time when no zone is
/// given), a date (`2024-05-01`, local midnight), or a Unix timestamp with an optional
/// fraction (`1714557600.123`).
pub fn parse_time_filter(value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, LogError> {
    let bad = || LogError::BadTime(value.to_string());
    if let Some(nanos) = parse_go_duration(value) {
        let d = chrono::TimeDelta::try_seconds(nanos.div_euclid(1_000_000_000) as i64)
            .and_then(|s| {
                s.checked_add(&chrono::TimeDelta::nanoseconds(
                    nanos.rem_euclid(1_000_000_000) as i64,
                ))
            })
            .ok_or_else(bad)?;
        return now.checked_sub_signed(d).ok_or_else(bad);
    }
    if value.contains('-') {
        return parse_rfc3339ish(value).ok_or_else(bad);
    }
    parse_unix(value).ok_or_else(bad)
}

/// Go's `time.ParseDuration`, in nanoseconds.
fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut part = whole.checked_mul(scale)?;
        if !frac.is_empty() {
            // Enough digits for nanosecond precision of an hour.
            let digits = &frac[..frac.len().min(18)];
            let f: i128 = digits.parse().ok()?;
            part = part.checked_add(f * scale / 10i128.pow(digits.len() as u32))?;
        }
        total = total.checked_add(part)?;
        if total > i64::MAX as i128 {
            return None;
        }
        rest = after;
    }
    Some(if neg { -total } else { total })
}

/// `1714557600` or `1714557600.123456789` (seconds since the epoch, UTC).
fn parse_unix(s: &str) -> Option<DateTime<Utc>> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (s.contains('.') && frac.is_empty()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0u32;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    DateTime::from_timestamp(secs, nanos)
}

/// `YYYY-MM-DD[THH[:MM[:SS[.frac]]]][Z|±HH:MM|±HHMM]`; without a zone, local time.
fn parse_rfc3339ish(s: &str) -> Option<DateTime<Utc>> {
    let date = NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()?;
    let mut rest = &s[10..];
    let mut time = NaiveTime::MIN;
    if let Some(t) = rest.strip_prefix(['T', 't']) {
        let clock_len = t.find(['Z', 'z', '+', '-']).unwrap_or(t.len());
        let (clock, zone) = t.split_at(clock_len);
        time = parse_clock(clock)?;
        rest = zone;
    }
    let naive = NaiveDateTime::new(date, time);
    let zone = match rest {
        "" => {
            return Local
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.to_utc());
        }
        "Z" | "z" => 0,
        _ => parse_offset(rest)?,
    };
    FixedOffset::east_opt(zone)?
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.to_utc())
}

/// `HH`, `HH:MM`, `HH:MM:SS` or `HH:MM:SS.frac`.
fn parse_clock(s: &str) -> Option<NaiveTime> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = hms.split(':');
    let mut field = |required: bool| -> Option<u32> {
        match parts.next() {
            Some(p) if p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok(),
            None if !required => Some(0),
            _ => None,
        }
    };
    let (h, m, sec) = (field(true)?, field(false)?, field(false)?);
    if parts.next().is_some() {
        return None;
    }
    if s.contains('.') && (frac.is_empty() || hms.len() != 8) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos = 0u32;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    NaiveTime::from_hms_nano_opt(h, m, sec, nanos)
}

/// `+HH:MM`, `-HH:MM` or `+HHMM`, in seconds east of UTC.
fn parse_offset(s: &str) -> Option<i32> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = s[1..].chars().filter(|c| *c != ':').collect();
    let colon_ok = matches!(s.len(), 6 if s.as_bytes()[3] == b':') || s.len() == 5;
    if !colon_ok || digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = digits[2..].parse().ok()?;
    if h > 23 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        t(s).to_utc()
    }

    fn log_file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f
    }

    /// The entries with the offsets where they end.
    fn ended(
        path: &Path,
        format: LogFormat,
        opts: &LogOptions,
        block: usize,
    ) -> Vec<(u64, LogEntry)> {
        let mut v = Vec::new();
        read_log_blocks(
            path,
            format,
            opts,
            &mut || true,
            &mut |end, e| {
                v.push((end, e));
                Ok(())
            },
            block,
        )
        .unwrap();
        v
    }

    fn entries(path: &Path, format: LogFormat, opts: &LogOptions, block: usize) -> Vec<LogEntry> {
        ended(path, format, opts, block)
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    fn printed(path: &Path, format: LogFormat, opts: &LogOptions) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        write_logs(path, format, opts, &mut out, &mut err, || true).unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn k8s_records() {
        let r = parse_k8s(b"2024-05-01T10:00:00.123456789Z stdout F hello world").unwrap();
        assert_eq!(r.time, t("2024-05-01T10:00:00.123456789Z"));
        assert_eq!(r.stream, Stream::Stdout);
        assert!(!r.partial);
        assert_eq!(r.data, b"hello world\n");

        let r = parse_k8s(b"2024-05-01T12:00:00+02:00 stderr P  two  spaces ").unwrap();
        assert_eq!((r.stream, r.partial), (Stream::Stderr, true));
        assert_eq!(r.data, b" two  spaces ");
        assert_eq!(r.time.to_utc(), utc("2024-05-01T10:00:00Z"));

        // An empty line, with and without the separator; CRI's extra tags.
        assert_eq!(
            parse_k8s(b"2024-05-01T10:00:00Z stdout F ").unwrap().data,
            b"\n"
        );
        assert_eq!(
            parse_k8s(b"2024-05-01T10:00:00Z stdout F").unwrap().data,
            b"\n"
        );
        assert!(
            parse_k8s(b"2024-05-01T10:00:00Z stdout P:x y")
                .unwrap()
                .partial
        );
        // Bytes that are not UTF-8 are kept as they are.
        assert_eq!(
            parse_k8s(b"2024-05-01T10:00:00Z stdout F \xff\xfe")
                .unwrap()
                .data,
            b"\xff\xfe\n"
        );

        for bad in [
            &b""[..],
            b"garbage",
            b"2024-05-01T10:00:00Z stdin F x",
            b"2024-05-01T10:00:00Z stdout X x",
            b"2024-05-01 stdout F x",
            b"\xff stdout F x",
        ] {
            assert_eq!(parse_k8s(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn json_records() {
        let r = parse_json(
            br#"{"log":"hi \"there\"\n","stream":"stderr","time":"2024-05-01T10:00:00.5Z"}"#,
        )
        .unwrap();
        assert_eq!(r.data, b"hi \"there\"\n");
        assert_eq!((r.stream, r.partial), (Stream::Stderr, false));
        assert_eq!(r.time, t("2024-05-01T10:00:00.5Z"));
        let r =
            parse_json(br#"{"log":"no newline","stream":"stdout","time":"2024-05-01T10:00:00Z"}"#)
                .unwrap();
        assert!(r.partial);
        for bad in [
            &br#"{"log":"x\n","stream":"stdout"}"#[..],
            br#"{"log":"x\n","stream":"nope","time":"2024-05-01T10:00:00Z"}"#,
            br#"{"log":"x\n","stream":"stdout","time":"yesterday"}"#,
            br#"{"log":"x\n","stream":"stdout","time":"2024-05-01T10:00:00Z""#,
            b"\xff",
        ] {
            assert_eq!(parse_json(bad), None);
        }
    }

    const K8S: &str = "\
2024-05-01T10:00:00.000000001Z stdout F one
2024-05-01T10:00:01Z stdout P tw
2024-05-01T10:00:02Z stderr F err one
2024-05-01T10:00:03Z stdout P o-
2024-05-01T10:00:04Z stdout F joined
this line is not a record
2024-05-01T10:00:05Z stderr P err no newline at exit
";

    #[test]
    fn k8s_file_partial_lines_and_streams() {
        let f = log_file(K8S.as_bytes());
        let (out, err) = printed(f.path(), LogFormat::K8sFile, &LogOptions::default());
        assert_eq!(out, "one\ntwo-joined\n");
        assert_eq!(err, "err one\nerr no newline at exit");

        let e = entries(f.path(), LogFormat::K8sFile, &LogOptions::default(), BLOCK);
        // Ordered by where they end; a joined line takes its first record's time.
        assert_eq!(e.len(), 4);
        assert_eq!(e[1].stream, Stream::Stderr);
        assert_eq!(e[2].data, b"two-joined\n");
        assert_eq!(e[2].time, t("2024-05-01T10:00:01Z"));

        let opts = LogOptions {
            timestamps: true,
            ..LogOptions::default()
        };
        let (out, err) = printed(f.path(), LogFormat::K8sFile, &opts);
        assert_eq!(
            out,
            "2024-05-01T10:00:00.000000001Z one\n2024-05-01T10:00:01Z two-joined\n"
        );
        assert_eq!(
            err,
            "2024-05-01T10:00:02Z err one\n2024-05-01T10:00:05Z err no newline at exit"
        );
    }

    #[test]
    fn json_file_partial_lines_and_streams() {
        let lines = [
            r#"{"log":"one\n","stream":"stdout","time":"2024-05-01T10:00:00Z"}"#,
            r#"{"log":"tw","stream":"stdout","time":"2024-05-01T10:00:01Z"}"#,
            r#"{"log":"err \u00e9\n","stream":"stderr","time":"2024-05-01T10:00:02Z"}"#,
            r#"{"log":"o\n","stream":"stdout","time":"2024-05-01T10:00:03Z"}"#,
            r#"{"log":"broken"#,
            r#"{"log":"last","stream":"stdout","time":"2024-05-01T10:00:04Z"}"#,
        ];
        let f = log_file((lines.join("\n") + "\n").as_bytes());
        let (out, err) = printed(f.path(), LogFormat::JsonFile, &LogOptions::default());
        assert_eq!(out, "one\ntwo\nlast");
        assert_eq!(err, "err é\n");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let mut content = b"\xff\xfe garbage\n\n{}\n".to_vec();
        content.extend_from_slice(b"2024-05-01T10:00:00Z stdout F ok\n");
        content.extend_from_slice(b"2024-05-01T10:00:00Z stdout F\xff\n");
        content.extend_from_slice(&[0u8; 100]);
        content.extend_from_slice(b"\n2024-05-01T10:00:01Z stdout F ok too\n");
        let f = log_file(&content);
        let (out, _) = printed(f.path(), LogFormat::K8sFile, &LogOptions::default());
        assert_eq!(out, "ok\nok too\n");
        let (out, err) = printed(f.path(), LogFormat::JsonFile, &LogOptions::default());
        assert_eq!((out.as_str(), err.as_str()), ("", ""));
    }

    #[test]
    fn last_line_without_newline_is_read() {
        let f = log_file(b"2024-05-01T10:00:00Z stdout F a\n2024-05-01T10:00:01Z stdout F b");
        let (out, _) = printed(f.path(), LogFormat::K8sFile, &LogOptions::default());
        assert_eq!(out, "a\nb\n");
        let opts = LogOptions {
            tail: Some(1),
            ..LogOptions::default()
        };
        assert_eq!(printed(f.path(), LogFormat::K8sFile, &opts).0, "b\n");
    }

    /// A log whose streams interleave and whose lines are cut into partial records.
    fn mixed_log(records: usize) -> Vec<u8> {
        let mut seed = 12345u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        let mut s = Vec::new();
        for i in 0..records {
            let r = next();
            let stream = if r % 3 == 0 { "stderr" } else { "stdout" };
            let tag = if r % 5 < 2 { "P" } else { "F" };
            let pad = "x".repeat((r % 40) as usize);
            s.extend_from_slice(
                format!(
                    "2024-05-01T10:{:02}:{:02}Z {stream} {tag} {i}{pad}\n",
                    i / 60 % 60,
                    i % 60
                )
                .as_bytes(),
            );
            if r % 17 == 0 {
                s.extend_from_slice(b"not a record\n");
            }
        }
        s
    }

    #[test]
    fn tail_matches_the_whole_read_for_any_block_size() {
        let content = mixed_log(120);
        let f = log_file(&content);
        // The tail counts lines in the order they end; an unfinished one ends where its
        // last record does (a whole read prints it last, having waited for more).
        let mut all = ended(f.path(), LogFormat::K8sFile, &LogOptions::default(), BLOCK);
        assert!(all.len() > 50);
        assert!(!all.is_sorted_by_key(|(end, _)| *end));
        all.sort_by_key(|(end, _)| *end);
        let all: Vec<_> = all.into_iter().map(|(_, e)| e).collect();
        for block in [1, 2, 7, 16, 61, 100, 4096, BLOCK] {
            for n in (0..=all.len() + 2).step_by(if block < 16 { 7 } else { 1 }) {
                let opts = LogOptions {
                    tail: Some(n),
                    ..LogOptions::default()
                };
                let got = entries(f.path(), LogFormat::K8sFile, &opts, block);
                let want = &all[all.len().saturating_sub(n)..];
                assert_eq!(got, want, "tail {n}, block {block}");
            }
        }
    }

    #[test]
    fn tail_of_a_big_file_reads_from_near_its_end() {
        let mut content = Vec::new();
        for i in 0..200_000 {
            content.extend_from_slice(
                format!("2024-05-01T10:00:00.{i:09}Z stdout F line {i}\n").as_bytes(),
            );
        }
        // The last line spans a block boundary and is cut into two records.
        content.extend_from_slice(b"2024-05-01T11:00:00Z stderr P ");
        content.extend_from_slice("y".repeat(3 * BLOCK).as_bytes());
        content.extend_from_slice(b"\n2024-05-01T11:00:01Z stderr F end\n");
        let f = log_file(&content);
        let file = File::open(f.path()).unwrap();
        let len = content.len() as u64;
        let start = tail_start(&file, LogFormat::K8sFile, len, 3, BLOCK).unwrap();
        assert!(
            len - start < 3 * BLOCK as u64 + TAIL_LOOKBACK + 200,
            "started at {start} of {len}"
        );

        let opts = LogOptions {
            tail: Some(3),
            ..LogOptions::default()
        };
        let (out, err) = printed(f.path(), LogFormat::K8sFile, &opts);
        assert_eq!(out, "line 199998\nline 199999\n");
        assert_eq!(err.len(), 3 * BLOCK + 4);
        assert!(err.ends_with("yyend\n"));
    }

    #[test]
    fn tail_looks_back_a_bounded_distance_for_a_line_start() {
        // stderr's only other record is at the very start: its last line is whole
        // without reading back that far.
        let mut content = b"2024-05-01T10:00:00Z stderr F first\n".to_vec();
        while content.len() < 3 * TAIL_LOOKBACK as usize {
            content.extend_from_slice(b"2024-05-01T10:00:01Z stdout F filler line\n");
        }
        content.extend_from_slice(b"2024-05-01T10:00:02Z stderr P la");
        content.extend_from_slice(b"\n2024-05-01T10:00:02Z stdout F out\n");
        content.extend_from_slice(b"2024-05-01T10:00:03Z stderr F st\n");
        let f = log_file(&content);
        let file = File::open(f.path()).unwrap();
        let len = content.len() as u64;
        let start = tail_start(&file, LogFormat::K8sFile, len, 2, BLOCK).unwrap();
        assert!(
            start > len - TAIL_LOOKBACK - 1000,
            "started at {start} of {len}"
        );
        let opts = LogOptions {
            tail: Some(2),
            ..LogOptions::default()
        };
        let (out, err) = printed(f.path(), LogFormat::K8sFile, &opts);
        assert_eq!((out.as_str(), err.as_str()), ("out\n", "last\n"));
    }

    #[test]
    fn since_and_until() {
        let f = log_file(K8S.as_bytes());
        let opts = LogOptions {
            since: Some(utc("2024-05-01T10:00:01Z")),
            until: Some(utc("2024-05-01T10:00:04Z")),
            ..LogOptions::default()
        };
        let (out, err) = printed(f.path(), LogFormat::K8sFile, &opts);
        assert_eq!((out.as_str(), err.as_str()), ("two-joined\n", "err one\n"));
        // The tail is taken first, then the times (as podman does).
        let opts = LogOptions {
            tail: Some(2),
            until: Some(utc("2024-05-01T10:00:04Z")),
            ..LogOptions::default()
        };
        let (out, err) = printed(f.path(), LogFormat::K8sFile, &opts);
        assert_eq!((out.as_str(), err.as_str()), ("two-joined\n", ""));
    }

    #[test]
    fn follow_reads_appended_lines_until_stopped() {
        let f =
            log_file(b"2024-05-01T10:00:00Z stdout F old 1\n2024-05-01T10:00:00Z stdout F old 2\n");
        let path = f.path().to_path_buf();
        let stopped = Arc::new(AtomicBool::new(false));
        let writer = {
            let stopped = stopped.clone();
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            std::thread::spawn(move || {
                for i in 0..5 {
                    std::thread::sleep(Duration::from_millis(30));
                    writeln!(file, "2024-05-01T10:00:0{i}Z stdout F new {i}").unwrap();
                }
                // A record written in two pieces, and a line cut into records.
                file.write_all(b"2024-05-01T10:00:06Z stderr P cut ")
                    .unwrap();
                std::thread::sleep(Duration::from_millis(120));
                file.write_all(b"in two\n2024-05-01T10:00:07Z stderr F records\n")
                    .unwrap();
                file.write_all(b"2024-05-01T10:00:08Z stdout P unfinished\n")
                    .unwrap();
                stopped.store(true, Ordering::SeqCst);
            })
        };
        let opts = LogOptions {
            follow: true,
            tail: Some(1),
            ..LogOptions::default()
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let began = std::time::Instant::now();
        write_logs(&path, LogFormat::K8sFile, &opts, &mut out, &mut err, || {
            stopped.load(Ordering::SeqCst)
        })
        .unwrap();
        writer.join().unwrap();
        assert!(began.elapsed() < Duration::from_secs(5));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "old 2\nnew 0\nnew 1\nnew 2\nnew 3\nnew 4\nunfinished"
        );
        assert_eq!(String::from_utf8(err).unwrap(), "cut in tworecords\n");
    }

    #[test]
    fn follow_with_tail_zero_prints_only_new_lines() {
        let f = log_file(b"2024-05-01T10:00:00Z stdout F old\n");
        let mut calls = 0;
        let mut out = Vec::new();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(f.path())
            .unwrap();
        let opts = LogOptions {
            follow: true,
            tail: Some(0),
            ..LogOptions::default()
        };
        write_logs(
            f.path(),
            LogFormat::K8sFile,
            &opts,
            &mut out,
            &mut io::sink(),
            || {
                calls += 1;
                if calls == 2 {
                    writeln!(file, "2024-05-01T10:00:01Z stdout F new").unwrap();
                }
                calls >= 3
            },
        )
        .unwrap();
        assert_eq!(out, b"new\n");
    }

    #[test]
    fn missing_log_is_an_error_naming_it() {
        let e = read_log(
            Path::new("/nonexistent/ctr.log"),
            LogFormat::K8sFile,
            &LogOptions::default(),
            || true,
            |_| Ok(()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ctr.log"), "{e}");
    }

    #[test]
    fn timestamps_print_as_go_rfc3339_nano() {
        assert_eq!(
            format_timestamp(&t("2024-05-01T10:00:00Z")),
            "2024-05-01T10:00:00Z"
        );
        assert_eq!(
            format_timestamp(&t("2024-05-01T10:00:00.120000000Z")),
            "2024-05-01T10:00:00.12Z"
        );
        assert_eq!(
            format_timestamp(&t("2024-05-01T10:00:00.000000007+02:00")),
            "2024-05-01T10:00:00.000000007+02:00"
        );
        assert_eq!(
            format_timestamp(&t("2024-05-01T10:00:00.5-05:30")),
            "2024-05-01T10:00:00.5-05:30"
        );
    }

    #[test]
    fn go_durations() {
        let s = 1_000_000_000i128;
        for (text, nanos) in [
            ("0", 0),
            ("10m", 600 * s),
            ("1h30m", 5400 * s),
            ("2s", 2 * s),
            ("1.5h", 5400 * s),
            (".5s", s / 2),
            ("1h2m3s4ms5us6ns", 3723 * s + 4_005_006),
            ("3µs", 3000),
            ("3μs", 3000),
            ("-2m", -120 * s),
            ("+2m", 120 * s),
        ] {
            assert_eq!(parse_go_duration(text), Some(nanos), "{text}");
        }
        for bad in [
            "",
            "10",
            "m",
            "1x",
            "1.s5",
            "-",
            "1h 2m",
            "2024-05-01",
            "99999999999h",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn time_filters_as_podman_accepts_them() {
        let now = utc("2024-05-01T12:00:00Z");
        let ok = |v: &str| parse_time_filter(v, now).unwrap();
        assert_eq!(ok("10m"), utc("2024-05-01T11:50:00Z"));
        assert_eq!(ok("1h30m"), utc("2024-05-01T10:30:00Z"));
        assert_eq!(ok("2s"), utc("2024-05-01T11:59:58Z"));
        assert_eq!(ok("0"), now);
        assert_eq!(ok("2024-05-01T10:00:00Z"), utc("2024-05-01T10:00:00Z"));
        assert_eq!(
            ok("2024-05-01T10:00:00.123456789Z"),
            utc("2024-05-01T10:00:00.123456789Z")
        );
        assert_eq!(ok("2024-05-01T10:00:00+02:00"), utc("2024-05-01T08:00:00Z"));
        assert_eq!(ok("2024-05-01T10:00:00-0130"), utc("2024-05-01T11:30:00Z"));
        assert_eq!(ok("2024-05-01T10:00Z"), utc("2024-05-01T10:00:00Z"));
        assert_eq!(ok("2024-05-01T10+01:00"), utc("2024-05-01T09:00:00Z"));
        assert_eq!(ok("2024-05-01Z"), utc("2024-05-01T00:00:00Z"));
        assert_eq!(ok("1714557600"), utc("2024-05-01T10:00:00Z"));
        assert_eq!(ok("1714557600.25"), utc("2024-05-01T10:00:00.25Z"));
        assert_eq!(
            ok("1714557600.123456789999"),
            utc("2024-05-01T10:00:00.123456789Z")
        );

        // Without a zone: local time.
        let local = |y, mo, d, h, mi, s| {
            Local
                .with_ymd_and_hms(y, mo, d, h, mi, s)
                .earliest()
                .unwrap()
                .to_utc()
        };
        assert_eq!(ok("2024-05-01"), local(2024, 5, 1, 0, 0, 0));
        assert_eq!(ok("2024-05-01T10:20:30"), local(2024, 5, 1, 10, 20, 30));
        assert_eq!(ok("2024-05-01T10:20"), local(2024, 5, 1, 10, 20, 0));
        assert_eq!(ok("2024-05-01T10"), local(2024, 5, 1, 10, 0, 0));
        assert_eq!(
            ok("2024-05-01T10:20:30.5"),
            local(2024, 5, 1, 10, 20, 30) + chrono::TimeDelta::milliseconds(500)
        );

        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-05-01T25:00",
            "2024-05-01T10:00:00+2",
            "2024-05-01T10:00:00Zjunk",
            "2024-05-01T1:00",
            "2024-05-01T10:00.5",
            "1714557600.",
            "1.2.3",
            "10x",
        ] {
            let e = parse_time_filter(bad, now).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn log_format_names() {
        assert_eq!("k8s-file".parse::<LogFormat>().unwrap(), LogFormat::K8sFile);
        assert_eq!(
            "json-file".parse::<LogFormat>().unwrap(),
            LogFormat::JsonFile
        );
        assert!("journald".parse::<LogFormat>().is_err());
    }
}
