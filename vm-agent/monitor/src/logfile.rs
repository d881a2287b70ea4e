//! The container log: `k8s-file` (CRI's format, as Podman writes it) and `json-file`
//! (Docker's), one record per line of output, stamped with RFC 3339 UTC times with
//! nanoseconds. Records are built in a small buffer flushed every 16 KiB, and a write
//! that fails is dropped, never retried: the container must not wait for its log.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest text of one record; longer lines are cut into partial (`P`) records.
pub const MAX_RECORD: usize = 16 * 1024;

const FLUSH_AT: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    K8sFile,
    JsonFile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    fn name(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`
pub type Stamp = [u8; 30];

/// The current time as an RFC 3339 stamp.
pub fn now() -> Stamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    stamp(d.as_secs() as i64, d.subsec_nanos())
}

/// Nanoseconds since the epoch, for the exit file.
pub fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`: shift to eras of 400 years that start on March 1st, where the
/// leap day falls last).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats seconds and nanoseconds since the epoch (UTC); years are kept to 0..=9999.
pub fn stamp(secs: i64, nanos: u32) -> Stamp {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u64);
    put(5, 2, mo.into());
    put(8, 2, d.into());
    put(11, 2, (sod / 3600) as u64);
    put(14, 2, (sod / 60 % 60) as u64);
    put(17, 2, (sod % 60) as u64);
    put(20, 9, nanos.min(999_999_999).into());
    out
}

/// The bytes of an unfinished UTF-8 sequence at the end of a partial json-file record,
/// kept to start the stream's next record (a multi-byte character cut by a read).
#[derive(Debug, Default, Clone, Copy)]
struct Carry {
    bytes: [u8; 3],
    len: usize,
}

/// The log of one container, written to `W` (a file; a `Vec` in tests).
pub struct Log<W: Write> {
    out: W,
    format: Format,
    buf: Vec<u8>,
    carry: [Carry; 2],
    /// A write stopped inside a record: the next one starts on a fresh line.
    broken: bool,
    error: Option<io::Error>,
}

impl<W: Write> Log<W> {
    pub fn new(out: W, format: Format) -> Log<W> {
        Log {
            out,
            format,
            buf: Vec::new(),
            carry: [Carry::default(); 2],
            broken: false,
            error: None,
        }
    }

    /// The first write error since the last call (the rest of that write was dropped).
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.error.take()
    }

    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Logs one chunk of a stream's output, read at `at`, and writes it out.
    pub fn write(&mut self, stream: Stream, data: &[u8], at: &Stamp) {
        let mut rest = data;
        while !rest.is_empty() {
            let (text, full) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i < MAX_RECORD => (&rest[..=i], true),
                _ if rest.len() > MAX_RECORD => (&rest[..MAX_RECORD], false),
                _ => (rest, false),
            };
            rest = &rest[text.len()..];
            self.record(stream, text, full, at);
        }
        self.flush();
    }

    /// The stream ended: what is still carried is logged as a replacement character.
    pub fn end(&mut self, stream: Stream, at: &Stamp) {
        if self.format == Format::JsonFile && self.carry[stream as usize].len > 0 {
            self.carry[stream as usize].len = 0;
            self.json_record(stream, "\u{fffd}".as_bytes(), false, at);
            self.flush();
        }
    }

    /// One record; `full` when `text` ends with its line's newline.
    fn record(&mut self, stream: Stream, text: &[u8], full: bool, at: &Stamp) {
        match self.format {
            Format::K8sFile => {
                let body = if full { &text[..text.len() - 1] } else { text };
                self.push(at);
                self.push(b" ");
                self.push(stream.name());
                self.push(if full { b" F " } else { b" P " });
                self.push(body);
                self.push(b"\n");
            }
            Format::JsonFile => self.json_record(stream, text, !full, at),
        }
    }

    fn json_record(&mut self, stream: Stream, text: &[u8], partial: bool, at: &Stamp) {
        let carry = std::mem::take(&mut self.carry[stream as usize]);
        let mut text = text;
        // First finish the character the previous partial record of this stream began.
        let mut head = [0u8; 4];
        let mut head_len = 0;
        let mut head_bad = false;
        if carry.len > 0 {
            let want = utf8_width(carry.bytes[0]).max(carry.len + 1);
            let take = (want - carry.len).min(text.len());
            head[..carry.len].copy_from_slice(&carry.bytes[..carry.len]);
            head[carry.len..carry.len + take].copy_from_slice(&text[..take]);
            head_len = carry.len + take;
            match std::str::from_utf8(&head[..head_len]) {
                Ok(_) => text = &text[take..],
                Err(e) => match e.error_len() {
                    None if partial => {
                        // Still unfinished and this record has nothing more: keep it.
                        let c = &mut self.carry[stream as usize];
                        c.bytes[..head_len].copy_from_slice(&head[..head_len]);
                        c.len = head_len;
                        return;
                    }
                    None => {
                        head_bad = true;
                        text = &text[take..];
                    }
                    // The bytes after the bad prefix are this record's own: read them
                    // again below.
                    Some(n) => {
                        head_bad = true;
                        text = &text[n.saturating_sub(carry.len)..];
                    }
                },
            }
        }
        let tail = if partial { incomplete_tail(text) } else { 0 };
        if tail > 0 {
            let c = &mut self.carry[stream as usize];
            c.bytes[..tail].copy_from_slice(&text[text.len() - tail..]);
            c.len = tail;
            text = &text[..text.len() - tail];
        }
        if head_len == 0 && text.is_empty() {
            return;
        }
        self.push(b"{\"log\":\"");
        if head_bad {
            self.push_escaped("\u{fffd}");
        } else if head_len > 0 {
            let h = head;
            self.push_lossy(&h[..head_len]);
        }
        self.push_lossy(text);
        self.push(b"\",\"stream\":\"");
        self.push(stream.name());
        self.push(b"\",\"time\":\"");
        self.push(at);
        self.push(b"\"}\n");
    }

    /// Escapes `text` into the record, replacing invalid UTF-8 with U+FFFD as
    /// `String::from_utf8_lossy` does.
    fn push_lossy(&mut self, mut text: &[u8]) {
        loop {
            match std::str::from_utf8(text) {
                Ok(s) => return self.push_escaped(s),
                Err(e) => {
                    let (good, bad) = text.split_at(e.valid_up_to());
                    // SAFETY: from_utf8 vouched for the bytes before valid_up_to.
                    self.push_escaped(unsafe { std::str::from_utf8_unchecked(good) });
                    self.push_escaped("\u{fffd}");
                    match e.error_len() {
                        Some(n) => text = &bad[n..],
                        None => return,
                    }
                }
            }
        }
    }

    fn push_escaped(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let esc: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => b"",
                _ => continue,
            };
            self.push(&bytes[start..i]);
            start = i + 1;
            if esc.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.push(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
            } else {
                self.push(esc);
            }
        }
        self.push(&bytes[start..]);
    }

    fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if self.broken && self.write_out(b"\n").is_ok() {
            self.broken = false;
        }
        let mut buf = std::mem::take(&mut self.buf);
        if !self.broken
            && let Err((written, e)) = self.write_out(&buf)
        {
            self.broken = written > 0;
            self.error.get_or_insert(e);
        }
        buf.clear();
        // A burst of escaped control characters can grow the buffer; give it back.
        if buf.capacity() > 4 * FLUSH_AT {
            buf = Vec::new();
        }
        self.buf = buf;
    }

    /// Writes all of `b` or reports how much got out before the error.
    fn write_out(&mut self, mut b: &[u8]) -> Result<(), (usize, io::Error)> {
        let total = b.len();
        while !b.is_empty() {
            match self.out.write(b) {
                Ok(0) => return Err((total - b.len(), io::ErrorKind::WriteZero.into())),
                Ok(n) => b = &b[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err((total - b.len(), e)),
            }
        }
        Ok(())
    }
}

/// How many bytes at the end of `text` begin a UTF-8 character that is not finished.
fn incomplete_tail(text: &[u8]) -> usize {
    for k in 1..=3.min(text.len()) {
        let t = &text[text.len() - k..];
        if t[0] >= 0xc2 {
            return match std::str::from_utf8(t) {
                Err(e) if e.valid_up_to() == 0 && e.error_len().is_none() => k,
                _ => 0,
            };
        }
    }
    0
}

/// The length of the UTF-8 sequence a lead byte announces (1 for anything else).
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &Stamp = b"2026-11-28T22:10:03.123456789Z";

    #[test]
    fn civil_dates() {
        let cases = [
            (0, (1970, 1, 1)),
            (-1, (1969, 12, 31)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (19_675, (2023, 11, 14)),
            (47_482, (2100, 1, 1)),
            (-719_468, (0, 3, 1)),
        ];
        for (days, want) in cases {
            assert_eq!(civil_from_days(days), want, "day {days}");
        }
        // Every day of 1900..2200 follows the previous one.
        let mut prev = civil_from_days(-25_567);
        assert_eq!(prev, (1900, 1, 1));
        for d in -25_566..84_000 {
            let c = civil_from_days(d);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = (prev.0, prev.1 + 1, 1);
            let next_year = (prev.0 + 1, 1, 1);
            assert!(
                c == next_day || c == next_month || c == next_year,
                "{prev:?} -> {c:?}"
            );
            prev = c;
        }
    }

    #[test]
    fn stamps() {
        assert_eq!(&stamp(0, 0), b"1970-01-01T00:00:00.000000000Z");
        assert_eq!(&stamp(1_700_000_000, 5), b"2023-11-14T22:13:20.000000005Z");
        assert_eq!(
            &stamp(951_868_799, 999_999_999),
            b"2000-02-29T23:59:59.999999999Z"
        );
    }

    fn k8s(chunks: &[(Stream, &[u8])]) -> String {
        let mut l = Log::new(Vec::new(), Format::K8sFile);
        for (s, d) in chunks {
            l.write(*s, d, T);
        }
        String::from_utf8(l.into_inner()).unwrap()
    }

    #[test]
    fn k8s_records() {
        let t = std::str::from_utf8(T).unwrap();
        assert_eq!(
            k8s(&[
                (Stream::Stdout, b"a\nb"),
                (Stream::Stderr, b"e\n"),
                (Stream::Stdout, b"c\n\n")
            ]),
            format!(
                "{t} stdout F a\n{t} stdout P b\n{t} stderr F e\n{t} stdout F c\n{t} stdout F \n"
            )
        );
    }

    #[test]
    fn k8s_cuts_long_lines() {
        let mut line = vec![b'x'; MAX_RECORD * 2 + 10];
        line.push(b'\n');
        let out = k8s(&[(Stream::Stdout, &line)]);
        let recs: Vec<&str> = out.lines().collect();
        assert_eq!(recs.len(), 3);
        assert!(recs[0].contains(" stdout P "));
        assert!(recs[1].contains(" stdout P "));
        assert!(recs[2].ends_with(" stdout F xxxxxxxxxx"));
        assert_eq!(recs[0].len(), 30 + 10 + MAX_RECORD);
    }

    fn json(chunks: &[(Stream, &[u8])]) -> Vec<String> {
        let mut l = Log::new(Vec::new(), Format::JsonFile);
        for (s, d) in chunks {
            l.write(*s, d, T);
        }
        l.end(Stream::Stdout, T);
        l.end(Stream::Stderr, T);
        let out = String::from_utf8(l.into_inner()).unwrap();
        out.lines()
            .map(|r| {
                let pre = "{\"log\":\"";
                let post_at = r.find("\",\"stream\":\"").unwrap();
                assert!(r.starts_with(pre), "{r}");
                assert!(r.ends_with("\",\"time\":\"2026-11-28T22:10:03.123456789Z\"}"));
                r[pre.len()..post_at].to_string()
            })
            .collect()
    }

    #[test]
    fn json_escapes() {
        assert_eq!(
            json(&[(Stream::Stdout, b"a\"b\\c\td\x01\x1b\r\n")]),
            ["a\\\"b\\\\c\\td\\u0001\\u001b\\r\\n"]
        );
        assert_eq!(json(&[(Stream::Stdout, b"x")]), ["x"]);
        assert_eq!(json(&[(Stream::Stdout, "é €\n".as_bytes())]), ["é €\\n"]);
    }

    #[test]
    fn json_replaces_invalid_utf8() {
        let cases: &[(&[&[u8]], &[&str])] = &[
            (&[b"a\xffb\n"], &["a\u{fffd}b\\n"]),
            (&[b"\xe2\x82\n"], &["\u{fffd}\\n"]),
            (&[b"\xed\xa0\x80\n"], &["\u{fffd}\u{fffd}\u{fffd}\\n"]),
            // A character cut between two reads is put back together.
            (&[b"a\xe2", b"\x82\xacb\n"], &["a", "\u{20ac}b\\n"]),
            (
                &[b"\xf0\x9f", b"\x98", b"\x80\n"],
                &["", "", "\u{1f600}\\n"],
            ),
            // ... unless what follows does not continue it.
            (&[b"a\xe2", b"bc\n"], &["a", "\u{fffd}bc\\n"]),
            (&[b"a\xf0\x9f", b"\x98x\n"], &["a", "\u{fffd}x\\n"]),
            (&[b"a\xe2", b"\n"], &["a", "\u{fffd}\\n"]),
            // An unfinished character at the end of the stream.
            (&[b"a\xe2"], &["a", "\u{fffd}"]),
        ];
        for (chunks, want) in cases {
            let c: Vec<(Stream, &[u8])> = chunks.iter().map(|c| (Stream::Stdout, *c)).collect();
            let got = json(&c);
            let got: Vec<&str> = got
                .iter()
                .map(|s| s.as_str())
                .filter(|s| !s.is_empty())
                .collect();
            let want: Vec<&str> = want.iter().copied().filter(|s| !s.is_empty()).collect();
            assert_eq!(got, want, "{chunks:?}");
        }
    }

    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failed_writes_are_dropped_and_reported_once() {
        let mut l = Log::new(Full, Format::K8sFile);
        l.write(Stream::Stdout, b"a\n", T);
        assert_eq!(l.take_error().unwrap().raw_os_error(), Some(libc::ENOSPC));
        assert!(l.take_error().is_none());
        l.write(Stream::Stdout, &[b'y'; 100_000], T);
        assert!(l.buf.is_empty());
        assert!(l.buf.capacity() <= 4 * FLUSH_AT);
    }
}
