//! Column alignment compatible with Go's `text/tabwriter`.
//!
//! Podman renders table output through
//! `tabwriter.NewWriter(w, 12, 2, 2, ' ', tabwriter.StripEscape)`: minimum
//! cell width 12, padding 2, pad character `' '` (so the tab width is
//! irrelevant) and no formatting flags that change the layout (`StripEscape`
//! only matters for the `0xff` escape byte, which never occurs in valid
//! UTF-8 text). [`TabWriter::podman`] reproduces exactly that configuration.
//!
//! The algorithm is a faithful port of Go's:
//!
//! * Text is split into cells terminated by `'\t'` (or `'\v'`, a "soft"
//!   terminator); lines are terminated by `'\n'` (or `'\f'`, which also forces
//!   a flush).
//! * The last cell of a line is the text after the final tab. It is never part
//!   of a column, so it is neither aligned nor padded.
//! * A *column block* is a run of consecutive lines that all have a
//!   (tab-terminated) cell in that column. The width of the column within the
//!   block is `max(cell width) + padding`, but at least `minwidth`. Cell widths
//!   are measured in Unicode scalar values (Go counts runes).
//! * A line consisting of a single cell (no tab at all) cannot influence the
//!   layout of later lines, so it ends every open column block (Go flushes the
//!   buffer at that point).
//!
//! Output is accumulated in memory; [`TabWriter::finish`] flushes the buffered
//! lines and returns everything written.

/// One tab-terminated (or trailing) cell of a buffered line.
#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    /// Cell size in bytes.
    size: usize,
    /// Cell width in chars (Go: runes).
    width: usize,
    /// True if the cell was terminated by `'\t'` (as opposed to `'\v'`).
    htab: bool,
}

/// An elastic-tabstop writer with Go `text/tabwriter` semantics.
#[derive(Clone, Debug)]
pub struct TabWriter {
    minwidth: usize,
    padding: usize,
    /// Text of all buffered cells, without the terminators.
    buf: String,
    /// The current, not yet terminated cell.
    cell: Cell,
    /// Buffered lines; the last one is the line currently being written.
    lines: Vec<Vec<Cell>>,
    /// Column widths of the column blocks being formatted (a stack).
    widths: Vec<usize>,
    /// Formatted output.
    out: String,
}

impl TabWriter {
    /// A writer with the given minimal cell width (including padding) and
    /// padding added to the widest cell of a column block. The pad character
    /// is always `' '`.
    pub fn new(minwidth: usize, padding: usize) -> Self {
        let mut w = TabWriter {
            minwidth,
            padding,
            buf: String::new(),
            cell: Cell::default(),
            lines: Vec::new(),
            widths: Vec::new(),
            out: String::new(),
        };
        w.reset();
        w
    }

    /// The configuration Podman uses for table output: minwidth 12, padding 2.
    pub fn podman() -> Self {
        Self::new(12, 2)
    }

    /// Buffer `s`. The text may be split arbitrarily across calls.
    pub fn write_str(&mut self, s: &str) {
        let mut n = 0;
        for (i, b) in s.bytes().enumerate() {
            if matches!(b, b'\t' | b'\x0b' | b'\n' | b'\x0c') {
                self.append(&s[n..i]);
                n = i + 1;
                let ncells = self.terminate_cell(b == b'\t');
                if b == b'\n' || b == b'\x0c' {
                    self.lines.push(Vec::new());
                    // A '\f' always flushes. Otherwise, a line with only one
                    // cell has no impact on the formatting of the following
                    // lines, so everything buffered so far can be laid out.
                    if b == b'\x0c' || ncells == 1 {
                        self.flush();
                    }
                }
            }
        }
        self.append(&s[n..]);
    }

    /// Lay out everything buffered so far (like Go's `Flush`). A trailing,
    /// unterminated cell is treated as the last cell of its line.
    pub fn flush(&mut self) {
        if self.cell.size > 0 {
            self.terminate_cell(false);
        }
        self.format(0, 0, self.lines.len());
        self.reset();
    }

    /// Flush and return the formatted output.
    pub fn finish(mut self) -> String {
        self.flush();
        self.out
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.cell = Cell::default();
        self.lines.clear();
        self.lines.push(Vec::new());
        self.widths.clear();
    }

    fn append(&mut self, text: &str) {
        self.buf.push_str(text);
        self.cell.size += text.len();
        self.cell.width += text.chars().count();
    }

    /// Terminate the current cell, add it to the current line and return the
    /// number of cells in that line.
    fn terminate_cell(&mut self, htab: bool) -> usize {
        self.cell.htab = htab;
        let cell = std::mem::take(&mut self.cell);
        let line = self
            .lines
            .last_mut()
            .expect("there is always a current line");
        line.push(cell);
        line.len()
    }

    /// Format lines `line0..line1`; `pos0` is the buffer offset of the start
    /// of `line0`. Returns the buffer offset of the start of `line1`.
    fn format(&mut self, pos0: usize, mut line0: usize, line1: usize) -> usize {
        let mut pos = pos0;
        let column = self.widths.len();
        let mut this = line0;
        while this < line1 {
            // The last cell of a line is not part of any column.
            if column + 1 >= self.lines[this].len() {
                this += 1;
                continue;
            }
            // This line has a cell in `column`: print the lines before the
            // column block, then find the block's extent and width.
            pos = self.write_lines(pos, line0, this);
            line0 = this;

            let mut width = self.minwidth;
            while this < line1 {
                let line = &self.lines[this];
                if column + 1 >= line.len() {
                    break;
                }
                width = width.max(line[column].width + self.padding);
                this += 1;
            }

            // Format the columns to the right within this block.
            self.widths.push(width);
            pos = self.format(pos, line0, this);
            self.widths.pop();
            line0 = this;
        }
        self.write_lines(pos, line0, line1)
    }

    fn write_lines(&mut self, pos0: usize, line0: usize, line1: usize) -> usize {
        let mut pos = pos0;
        for i in line0..line1 {
            for j in 0..self.lines[i].len() {
                let c = self.lines[i][j];
                if c.size > 0 {
                    self.out.push_str(&self.buf[pos..pos + c.size]);
                    pos += c.size;
                }
                if let Some(&cellw) = self.widths.get(j) {
                    for _ in c.width..cellw {
                        self.out.push(' ');
                    }
                }
            }
            if i + 1 == self.lines.len() {
                // The last buffered line has no newline yet: write any
                // outstanding text of the current cell.
                self.out.push_str(&self.buf[pos..pos + self.cell.size]);
                pos += self.cell.size;
            } else {
                self.out.push('\n');
            }
        }
        pos
    }
}

impl Default for TabWriter {
    fn default() -> Self {
        Self::podman()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn podman(s: &str) -> String {
        let mut w = TabWriter::podman();
        w.write_str(s);
        w.finish()
    }

    #[test]
    fn podman_images_header_only() {
        // `podman images` with no images.
        assert_eq!(
            podman("REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\n"),
            "REPOSITORY  TAG         IMAGE ID    CREATED     SIZE\n"
        );
    }

    #[test]
    fn podman_images_with_rows() {
        let input = "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\n\
                     docker.io/library/alpine\tlatest\ta1b2c3d4e5f6\t2 weeks ago\t7.8 MB\n\
                     localhost/x\t<none>\t0123456789ab\tAbout a minute ago\t1.2 GB\n";
        let want = "REPOSITORY                TAG         IMAGE ID      CREATED             SIZE\n\
                    docker.io/library/alpine  latest      a1b2c3d4e5f6  2 weeks ago         7.8 MB\n\
                    localhost/x               <none>      0123456789ab  About a minute ago  1.2 GB\n";
        assert_eq!(podman(input), want);
    }

    #[test]
    fn single_cell_line_breaks_column_blocks() {
        // Verified with podman 4.3.1:
        // podman images --format 'table a\tbb\tc\nxxxxxxxxxxxxxxxxxxxx\ty\tz\nno tabs here\n1\t2'
        // ('table' turns spaces into tabs, so "no tabs here" has three cells).
        assert_eq!(
            podman("a\tbb\tc\nxxxxxxxxxxxxxxxxxxxx\ty\tz\nno\ttabs\there\n1\t2\n"),
            "a                     bb          c\n\
             xxxxxxxxxxxxxxxxxxxx  y           z\n\
             no                    tabs        here\n\
             1                     2\n"
        );
        // A line without any tab ends the block: the lines after it are
        // aligned independently.
        assert_eq!(
            podman("aaaaaaaaaaaaaaaaaa\tb\nplain text\nc\td\n"),
            "aaaaaaaaaaaaaaaaaa  b\nplain text\nc           d\n"
        );
    }

    #[test]
    fn last_cell_is_not_padded_and_trailing_tab_pads() {
        assert_eq!(podman("a\tb\n"), "a           b\n");
        // With a trailing tab, "b" is a column cell and is padded; the empty
        // text after the last tab is the (unaligned) last cell.
        assert_eq!(podman("a\tb\t\n"), "a           b           \n");
    }

    #[test]
    fn column_blocks_are_independent() {
        // Column 1 exists only on the first two lines; the third line's
        // second cell is its last cell and does not belong to that block.
        let input = "a\tb\tc\nlonger-cell-here\tx\ty\nz\tlast\n";
        let want = "a                 b           c\n\
                    longer-cell-here  x           y\n\
                    z                 last\n";
        assert_eq!(podman(input), want);
        // Nested blocks: column 1 forms two separate blocks around a line
        // with only two cells.
        let input = "a\tbbbbbbbbbbbbbbbb\tc\nd\te\nf\tg\th\n";
        let want = "a           bbbbbbbbbbbbbbbb  c\n\
                    d           e\n\
                    f           g           h\n";
        assert_eq!(podman(input), want);
    }

    #[test]
    fn empty_cells_and_minwidth() {
        assert_eq!(podman("\tx\n"), "            x\n");
        assert_eq!(podman("a\t\tb\n"), "a                       b\n");
        let mut w = TabWriter::new(0, 1);
        w.write_str("a\tbb\tc\naaa\tb\tc\n");
        assert_eq!(w.finish(), "a   bb c\naaa b  c\n");
    }

    #[test]
    fn widths_are_counted_in_chars() {
        assert_eq!(
            podman("héllo wörld ünïcode\tx\nabc\ty\n"),
            "héllo wörld ünïcode  x\nabc                  y\n"
        );
    }

    #[test]
    fn writes_may_be_split_anywhere() {
        let input = "NAME\tID\tSTATUS\nweb-server-01\t3f2a\tUp 2 hours\ndb\t9c1b\tExited (0)\n";
        let whole = podman(input);
        let mut w = TabWriter::podman();
        for ch in input.chars() {
            w.write_str(&ch.to_string());
        }
        assert_eq!(w.finish(), whole);
        assert_eq!(
            whole,
            "NAME           ID          STATUS\n\
             web-server-01  3f2a        Up 2 hours\n\
             db             9c1b        Exited (0)\n"
        );
    }

    #[test]
    fn unterminated_last_line_is_flushed() {
        assert_eq!(podman("a\tb\nccc\td"), "a           b\nccc         d");
        assert_eq!(podman("no newline"), "no newline");
        assert_eq!(podman(""), "");
    }

    #[test]
    fn form_feed_and_vertical_tab() {
        // '\f' ends the line and flushes: the blocks before and after it are
        // independent.
        assert_eq!(
            podman("aaaaaaaaaaaaaaaaaa\tb\x0cc\td\n"),
            "aaaaaaaaaaaaaaaaaa  b\nc           d\n"
        );
        // '\v' terminates a cell like '\t'.
        assert_eq!(podman("a\x0bb\n"), "a           b\n");
    }

    #[test]
    fn explicit_flush_keeps_output() {
        let mut w = TabWriter::podman();
        w.write_str("a\tb\n");
        w.flush();
        w.write_str("cccccccccccccccc\td\n");
        assert_eq!(w.finish(), "a           b\ncccccccccccccccc  d\n");
    }
}
