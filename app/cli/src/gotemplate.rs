//! Go `text/template`, as Podman users write it in `--format`.
//!
//! The data model is [`serde_json::Value`]: JSON objects stand for Go structs
//! (and maps), keyed by the Go field names (`ID`, `Repository`, ...).
//!
//! # Caller responsibilities (Podman's `report` package does these)
//!
//! * Strip the `table ` prefix (and render a header row / use a tabwriter);
//!   this module never looks for `table`.
//! * Turn the two-character sequences `\t` and `\n` into a real tab and
//!   newline before parsing: [`normalize_escapes`]. Podman first parses the
//!   normalized text and, if that fails, the original text.
//! * Podman appends a trailing `"\n"` to the format if it has none.
//!
//! # Supported
//!
//! * Text and actions with Go's lexical rules: `{{- ` / ` -}}` trim markers,
//!   `{{/* comments */}}`, newlines inside actions, string literals (`"..."`
//!   with Go escapes, `` `raw` ``), character constants (`'a'`), numbers
//!   (decimal, `0x`/`0o`/`0b`/leading-`0` octal, `_` separators, floats with
//!   exponents), `true`/`false`/`nil`.
//! * `.`, `.A.B`, `$`, `$x.A`, `(pipeline).A`, pipelines with `|`,
//!   parenthesised sub-expressions, `{{$x := ...}}` and `{{$x = ...}}`.
//! * `if` / `else if` / `else` / `end`, `with` (and `else with`), `range` over
//!   arrays, objects (sorted keys, like Go maps) and integers (newer Go), with
//!   `$i, $e :=`, `else`, `break` and `continue`; `define`, `template`, `block`.
//! * Go's builtins `and or not len index slice print printf println eq ne lt
//!   le gt ge html js urlquery` (everything but `call`), and Podman's extra
//!   functions from `containers/common/pkg/report`'s `DefaultFuncs`:
//!   `join json lower pad split title truncate upper` (that is the complete
//!   list; there is no `contains`, `replace` or `trim`).
//! * Printing follows Go's `fmt` `%v` on the values a `Value` can hold:
//!   strings raw; JSON integers (numbers serde_json holds as `i64`/`u64`,
//!   including large `u64`) without decimals; JSON floats as Go `float64`
//!   (`1.5`, `5`, `1e+06`); `true`/`false`; arrays as `[a b c]`; objects as
//!   `map[k1:v1 k2:v2]` with sorted keys; JSON `null` as `<nil>`; a missing
//!   object key as `<no value>`.
//! * `printf` implements Go's verbs `%v %s %d %q %x %X %o %O %b %c %U %t %e %E
//!   %f %F %g %G %T %%` with flags `-+# 0`, width, precision, `*` and `[n]`
//!   argument indexes, and Go's error forms (`%!d(string=x)`, `%!s(MISSING)`,
//!   `%!(EXTRA int=1)`, ...).
//! * `json` is Go's `encoding/json` without HTML escaping, compact; object
//!   keys keep the order of the `Value`.
//! * Errors read like Go's: `template: format:1: function "foo" not defined`
//!   for parse errors and `template: format:1:2: executing "format" at <.A.B>:
//!   can't evaluate field B in type string` for execution errors.
//!
//! # Not supported / differences
//!
//! * Methods (the data has none) and the `call` builtin; complex numbers; hex
//!   floating-point literals; custom delimiters; the `missingkey` option.
//! * Objects are treated as Go maps: a missing key yields `<no value>` (a Go
//!   struct would report an error) and an empty object is false.
//! * `index` on an object with a missing key yields `""` when all values of the
//!   object are strings (a Go `map[string]string`, e.g. labels), `<no value>`
//!   otherwise.
//! * `%#v` (Go syntax) only quotes strings; other values print as with `%v`.
//! * JSON `null` always prints `<nil>` (Go prints a nil slice as `[]` and a
//!   nil map as `map[]`; the type is lost in JSON).
//! * Nesting is limited to 100 levels of parentheses/control structures and
//!   100 nested `{{template}}` calls.
//! * Strings are Rust strings: cutting a multi-byte character (`truncate`,
//!   `slice`, `\x` escapes) yields U+FFFD instead of a raw byte.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::rc::Rc;

use serde_json::{Map, Value};

/// Maximum nesting of parenthesised pipelines and control structures.
const MAX_PARSE_DEPTH: usize = 100;
/// Maximum nesting of `{{template}}` invocations.
const MAX_EXEC_DEPTH: usize = 100;

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// A template parse or execution error; the message reads like Go's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

/// Replace the two-character sequences `\t` and `\n` with a tab and a
/// newline, as Podman does with `--format` strings before parsing them.
/// Sequences are replaced left to right without overlap, like Go's
/// `strings.NewReplacer("\\t", "\t", "\\n", "\n")`.
pub fn normalize_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('t') {
            out.push('\t');
            rest = r;
        } else if let Some(r) = after.strip_prefix('n') {
            out.push('\n');
            rest = r;
        } else {
            out.push('\\');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A parsed template.
///
/// The `table ` prefix Podman accepts is *not* handled here: the caller strips
/// it before parsing (see the module documentation).
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    src: String,
    trees: HashMap<String, Vec<Node>>,
}

impl Template {
    /// The name used in error messages by [`Template::parse`].
    pub const DEFAULT_NAME: &'static str = "format";

    /// Parse `src`, naming the template `format` in error messages.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        Self::parse_named(Self::DEFAULT_NAME, src)
    }

    /// Parse `src` under the given template name (Podman names templates
    /// after the command, e.g. `images`).
    pub fn parse_named(name: &str, src: &str) -> Result<Template, TemplateError> {
        let items = Lexer::new(src).run();
        let parser = Parser {
            name,
            items,
            idx: 0,
            line: 1,
            action_line: 0,
            vars: vec!["$".to_string()],
            range_depth: 0,
            depth: 0,
            trees: HashMap::new(),
        };
        let trees = parser.parse()?;
        Ok(Template {
            name: name.to_string(),
            src: src.to_string(),
            trees,
        })
    }

    /// Execute the template with `data` as `.` and `$`.
    pub fn execute(&self, data: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        self.execute_into(data, &mut out)?;
        Ok(out)
    }

    /// Execute the template, appending to `out`. On error, `out` holds the
    /// output produced before the error (Go writes it too).
    pub fn execute_into(&self, data: &Value, out: &mut String) -> Result<(), TemplateError> {
        let dot = from_json(data);
        let mut state = State {
            t: self,
            tmpl_name: &self.name,
            vars: vec![("$", dot.clone())],
            at: At::None,
            out,
            depth: 0,
        };
        let tree = self.trees.get(&self.name).map_or(&[][..], Vec::as_slice);
        state.walk(&dot, tree)?;
        Ok(())
    }

    /// 1-based line and 0-based byte column of `pos`, like Go's ErrorContext.
    fn line_col(&self, pos: usize) -> (usize, usize) {
        let text = &self.src[..pos.min(self.src.len())];
        let line = 1 + text.matches('\n').count();
        let col = match text.rfind('\n') {
            Some(i) => pos - (i + 1),
            None => pos,
        };
        (line, col)
    }
}

// ---------------------------------------------------------------------------
// Lexer (a port of text/template/parse/lex.go)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tok {
    Error,
    Bool,
    Char,
    CharConstant,
    Complex,
    Assign,
    Declare,
    Eof,
    Field,
    Identifier,
    LeftDelim,
    LeftParen,
    Number,
    Pipe,
    RawString,
    RightDelim,
    RightParen,
    Space,
    Str,
    Text,
    Variable,
    // Keywords follow this marker.
    Keyword,
    Block,
    Break,
    Continue,
    Dot,
    Define,
    Else,
    End,
    If,
    Nil,
    Range,
    Template,
    With,
}

#[derive(Clone, Debug)]
struct Item {
    typ: Tok,
    pos: usize,
    val: String,
    line: usize,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.typ {
            Tok::Eof => f.write_str("EOF"),
            Tok::Error => f.write_str(&self.val),
            t if t > Tok::Keyword => write!(f, "<{}>", self.val),
            _ if self.val.len() > 10 => {
                let head: String = self.val.chars().take(10).collect();
                write!(f, "{}...", go_quote(&head))
            }
            _ => f.write_str(&go_quote(&self.val)),
        }
    }
}

fn keyword(word: &str) -> Option<Tok> {
    Some(match word {
        "." => Tok::Dot,
        "block" => Tok::Block,
        "break" => Tok::Break,
        "continue" => Tok::Continue,
        "define" => Tok::Define,
        "else" => Tok::Else,
        "end" => Tok::End,
        "if" => Tok::If,
        "range" => Tok::Range,
        "nil" => Tok::Nil,
        "template" => Tok::Template,
        "with" => Tok::With,
        _ => return None,
    })
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphabetic() || c.is_numeric()
}

fn has_left_trim_marker(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0] == b'-' && is_space(b[1] as char)
}

fn has_right_trim_marker(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && is_space(b[0] as char) && b[1] == b'-'
}

fn left_trim_length(s: &str) -> usize {
    s.len() - s.trim_start_matches(is_space).len()
}

fn right_trim_length(s: &str) -> usize {
    s.len() - s.trim_end_matches(is_space).len()
}

/// Go's `%#U`: `U+0041 'A'`.
fn unicode_fmt(c: char) -> String {
    if is_print(c) {
        format!("U+{:04X} '{c}'", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
}

enum St {
    Text,
    LeftDelim,
    Comment,
    RightDelim,
    Inside,
    Space,
    Identifier,
    Field,
    Variable,
    Number,
    Quote,
    RawQuote,
    CharConst,
    Done,
}

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
    start: usize,
    paren_depth: i32,
    items: Vec<Item>,
    newlines: Vec<usize>,
}

impl<'a> Lexer<'a> {
    fn new(input: &'a str) -> Self {
        Lexer {
            input,
            pos: 0,
            start: 0,
            paren_depth: 0,
            items: Vec::new(),
            newlines: input.match_indices('\n').map(|(i, _)| i).collect(),
        }
    }

    fn run(mut self) -> Vec<Item> {
        let mut st = St::Text;
        loop {
            st = match st {
                St::Done => return self.items,
                St::Text => self.lex_text(),
                St::LeftDelim => self.lex_left_delim(),
                St::Comment => self.lex_comment(),
                St::RightDelim => self.lex_right_delim(),
                St::Inside => self.lex_inside(),
                St::Space => self.lex_space(),
                St::Identifier => self.lex_identifier(),
                St::Field => self.lex_field_or_var(Tok::Field),
                St::Variable => self.lex_field_or_var(Tok::Variable),
                St::Number => self.lex_number(),
                St::Quote => self.lex_quote('"', Tok::Str, "unterminated quoted string"),
                St::CharConst => {
                    self.lex_quote('\'', Tok::CharConstant, "unterminated character constant")
                }
                St::RawQuote => self.lex_raw_quote(),
            }
        }
    }

    fn line_at(&self, pos: usize) -> usize {
        1 + self.newlines.partition_point(|&p| p < pos)
    }

    fn rest(&self) -> &'a str {
        &self.input[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn emit(&mut self, typ: Tok) {
        self.items.push(Item {
            typ,
            pos: self.start,
            val: self.input[self.start..self.pos].to_string(),
            line: self.line_at(self.start),
        });
        self.start = self.pos;
    }

    fn ignore(&mut self) {
        self.start = self.pos;
    }

    fn error(&mut self, msg: String) -> St {
        self.items.push(Item {
            typ: Tok::Error,
            pos: self.start,
            val: msg,
            line: self.line_at(self.start),
        });
        St::Done
    }

    fn accept(&mut self, valid: &str) -> bool {
        match self.peek() {
            Some(c) if valid.contains(c) => {
                self.pos += c.len_utf8();
                true
            }
            _ => false,
        }
    }

    fn accept_run(&mut self, valid: &str) {
        while self.accept(valid) {}
    }

    /// Is the input at the right delimiter, possibly preceded by a trim
    /// marker? Returns (at delimiter, trim marker present).
    fn at_right_delim(&self) -> (bool, bool) {
        let s = self.rest();
        if has_right_trim_marker(s) && s[2..].starts_with("}}") {
            return (true, true);
        }
        (s.starts_with("}}"), false)
    }

    fn at_terminator(&self) -> bool {
        match self.peek() {
            None => true,
            Some(c) => is_space(c) || matches!(c, '.' | ',' | '|' | ':' | ')' | '(' | '}'),
        }
    }

    fn lex_text(&mut self) -> St {
        match self.rest().find("{{") {
            Some(x) => {
                if x > 0 {
                    self.pos += x;
                    let trim = if has_left_trim_marker(&self.input[self.pos + 2..]) {
                        right_trim_length(&self.input[self.start..self.pos])
                    } else {
                        0
                    };
                    self.pos -= trim;
                    if self.pos > self.start {
                        self.emit(Tok::Text);
                    }
                    self.pos += trim;
                    self.ignore();
                }
                St::LeftDelim
            }
            None => {
                self.pos = self.input.len();
                if self.pos > self.start {
                    self.emit(Tok::Text);
                }
                self.emit(Tok::Eof);
                St::Done
            }
        }
    }

    fn lex_left_delim(&mut self) -> St {
        self.pos += 2;
        let after = if has_left_trim_marker(self.rest()) {
            2
        } else {
            0
        };
        if self.input[self.pos + after..].starts_with("/*") {
            self.pos += after;
            self.ignore();
            return St::Comment;
        }
        self.emit(Tok::LeftDelim);
        self.pos += after;
        self.ignore();
        self.paren_depth = 0;
        St::Inside
    }

    fn lex_comment(&mut self) -> St {
        self.pos += 2;
        let Some(x) = self.rest().find("*/") else {
            return self.error("unclosed comment".into());
        };
        self.pos += x + 2;
        let (delim, trim) = self.at_right_delim();
        if !delim {
            return self.error("comment ends before closing delimiter".into());
        }
        if trim {
            self.pos += 2;
        }
        self.pos += 2;
        if trim {
            self.pos += left_trim_length(self.rest());
        }
        self.ignore();
        St::Text
    }

    fn lex_right_delim(&mut self) -> St {
        let (_, trim) = self.at_right_delim();
        if trim {
            self.pos += 2;
            self.ignore();
        }
        self.pos += 2;
        self.emit(Tok::RightDelim);
        if trim {
            self.pos += left_trim_length(self.rest());
            self.ignore();
        }
        St::Text
    }

    fn lex_inside(&mut self) -> St {
        let (delim, _) = self.at_right_delim();
        if delim {
            return if self.paren_depth == 0 {
                St::RightDelim
            } else {
                self.error("unclosed left paren".into())
            };
        }
        let Some(c) = self.next() else {
            return self.error("unclosed action".into());
        };
        match c {
            c if is_space(c) => {
                self.pos -= 1;
                St::Space
            }
            '=' => {
                self.emit(Tok::Assign);
                St::Inside
            }
            ':' => {
                if self.next() != Some('=') {
                    return self.error("expected :=".into());
                }
                self.emit(Tok::Declare);
                St::Inside
            }
            '|' => {
                self.emit(Tok::Pipe);
                St::Inside
            }
            '"' => St::Quote,
            '`' => St::RawQuote,
            '$' => St::Variable,
            '\'' => St::CharConst,
            '.' => match self.input.as_bytes().get(self.pos) {
                Some(b) if !b.is_ascii_digit() => St::Field,
                _ => {
                    self.pos -= 1;
                    St::Number
                }
            },
            '+' | '-' | '0'..='9' => {
                self.pos -= 1;
                St::Number
            }
            c if is_alnum(c) => {
                self.pos -= c.len_utf8();
                St::Identifier
            }
            '(' => {
                self.emit(Tok::LeftParen);
                self.paren_depth += 1;
                St::Inside
            }
            ')' => {
                self.emit(Tok::RightParen);
                self.paren_depth -= 1;
                if self.paren_depth < 0 {
                    return self.error(format!("unexpected right paren {}", unicode_fmt(')')));
                }
                St::Inside
            }
            ' '..='~' => {
                self.emit(Tok::Char);
                St::Inside
            }
            c => self.error(format!(
                "unrecognized character in action: {}",
                unicode_fmt(c)
            )),
        }
    }

    fn lex_space(&mut self) -> St {
        let mut n = 0;
        while self.peek().is_some_and(is_space) {
            self.pos += 1;
            n += 1;
        }
        // A space may belong to a trim-marked right delimiter.
        let prev = &self.input[self.pos - 1..];
        if has_right_trim_marker(prev) && prev[2..].starts_with("}}") {
            self.pos -= 1;
            if n == 1 {
                return St::RightDelim;
            }
        }
        self.emit(Tok::Space);
        St::Inside
    }

    fn lex_identifier(&mut self) -> St {
        while let Some(c) = self.peek().filter(|&c| is_alnum(c)) {
            self.pos += c.len_utf8();
        }
        if !self.at_terminator() {
            let c = self.peek().unwrap_or(' ');
            return self.error(format!("bad character {}", unicode_fmt(c)));
        }
        let word = &self.input[self.start..self.pos];
        let typ = match keyword(word) {
            Some(k) => k,
            None if word == "true" || word == "false" => Tok::Bool,
            None => Tok::Identifier,
        };
        self.emit(typ);
        St::Inside
    }

    fn lex_field_or_var(&mut self, typ: Tok) -> St {
        if self.at_terminator() {
            // A lone "$" or ".".
            self.emit(if typ == Tok::Variable {
                Tok::Variable
            } else {
                Tok::Dot
            });
            return St::Inside;
        }
        while let Some(c) = self.peek().filter(|&c| is_alnum(c)) {
            self.pos += c.len_utf8();
        }
        if !self.at_terminator() {
            let c = self.peek().unwrap_or(' ');
            return self.error(format!("bad character {}", unicode_fmt(c)));
        }
        self.emit(typ);
        St::Inside
    }

    fn lex_number(&mut self) -> St {
        if !self.scan_number() {
            let text = go_quote(&self.input[self.start..self.pos]);
            return self.error(format!("bad number syntax: {text}"));
        }
        if matches!(self.peek(), Some('+' | '-')) {
            if !self.scan_number() || !self.input[..self.pos].ends_with('i') {
                let text = go_quote(&self.input[self.start..self.pos]);
                return self.error(format!("bad number syntax: {text}"));
            }
            self.emit(Tok::Complex);
        } else {
            self.emit(Tok::Number);
        }
        St::Inside
    }

    fn scan_number(&mut self) -> bool {
        self.accept("+-");
        let mut digits = "0123456789_";
        if self.accept("0") {
            if self.accept("xX") {
                digits = "0123456789abcdefABCDEF_";
            } else if self.accept("oO") {
                digits = "01234567_";
            } else if self.accept("bB") {
                digits = "01_";
            }
        }
        self.accept_run(digits);
        if self.accept(".") {
            self.accept_run(digits);
        }
        if digits.len() == 11 && self.accept("eE") {
            self.accept("+-");
            self.accept_run("0123456789_");
        }
        if digits.len() == 23 && self.accept("pP") {
            self.accept("+-");
            self.accept_run("0123456789_");
        }
        self.accept("i");
        if self.peek().is_some_and(is_alnum) {
            self.next();
            return false;
        }
        true
    }

    fn lex_quote(&mut self, quote: char, typ: Tok, unterminated: &str) -> St {
        loop {
            match self.next() {
                Some('\\') => match self.next() {
                    Some(c) if c != '\n' => {}
                    _ => return self.error(unterminated.into()),
                },
                None | Some('\n') => return self.error(unterminated.into()),
                Some(c) if c == quote => break,
                Some(_) => {}
            }
        }
        self.emit(typ);
        St::Inside
    }

    fn lex_raw_quote(&mut self) -> St {
        loop {
            match self.next() {
                None => return self.error("unterminated raw quoted string".into()),
                Some('`') => break,
                Some(_) => {}
            }
        }
        self.emit(Tok::RawString);
        St::Inside
    }
}

// ---------------------------------------------------------------------------
// Parse tree
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipe),
    If(Branch),
    Range(Branch),
    With(Branch),
    Template(TemplateCall),
    Break,
    Continue,
}

#[derive(Debug, Clone)]
struct Branch {
    pipe: Pipe,
    list: Vec<Node>,
    else_list: Option<Vec<Node>>,
}

#[derive(Debug, Clone)]
struct TemplateCall {
    pos: usize,
    name: String,
    pipe: Option<Pipe>,
}

#[derive(Debug, Clone)]
struct Pipe {
    pos: usize,
    is_assign: bool,
    decl: Vec<String>,
    cmds: Vec<Cmd>,
}

#[derive(Debug, Clone)]
struct Cmd {
    pos: usize,
    args: Vec<Expr>,
}

#[derive(Debug, Clone)]
enum Expr {
    Field {
        pos: usize,
        idents: Vec<String>,
    },
    Variable {
        pos: usize,
        name: String,
        fields: Vec<String>,
    },
    Chain {
        pos: usize,
        node: Box<Expr>,
        fields: Vec<String>,
    },
    Ident {
        pos: usize,
        name: String,
    },
    Dot {
        pos: usize,
    },
    Nil {
        pos: usize,
    },
    Bool {
        pos: usize,
        val: bool,
    },
    Number {
        pos: usize,
        num: Num,
    },
    Str {
        pos: usize,
        quoted: String,
        val: String,
    },
    Pipe(Box<Pipe>),
}

/// A number literal with Go's "ideal constant" interpretations.
#[derive(Debug, Clone)]
struct Num {
    text: String,
    is_char: bool,
    is_int: bool,
    is_uint: bool,
    is_float: bool,
    i: i64,
    u: u64,
    f: f64,
}

impl Expr {
    fn pos(&self) -> usize {
        match self {
            Expr::Field { pos, .. }
            | Expr::Variable { pos, .. }
            | Expr::Chain { pos, .. }
            | Expr::Ident { pos, .. }
            | Expr::Dot { pos }
            | Expr::Nil { pos }
            | Expr::Bool { pos, .. }
            | Expr::Number { pos, .. }
            | Expr::Str { pos, .. } => *pos,
            Expr::Pipe(p) => p.pos,
        }
    }
}

fn write_fields(f: &mut fmt::Formatter<'_>, fields: &[String]) -> fmt::Result {
    for field in fields {
        write!(f, ".{field}")?;
    }
    Ok(())
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Field { idents, .. } => write_fields(f, idents),
            Expr::Variable { name, fields, .. } => {
                f.write_str(name)?;
                write_fields(f, fields)
            }
            Expr::Chain { node, fields, .. } => {
                match &**node {
                    Expr::Pipe(p) => write!(f, "({p})")?,
                    other => write!(f, "{other}")?,
                }
                write_fields(f, fields)
            }
            Expr::Ident { name, .. } => f.write_str(name),
            Expr::Dot { .. } => f.write_str("."),
            Expr::Nil { .. } => f.write_str("nil"),
            Expr::Bool { val, .. } => write!(f, "{val}"),
            Expr::Number { num, .. } => f.write_str(&num.text),
            Expr::Str { quoted, .. } => f.write_str(quoted),
            Expr::Pipe(p) => write!(f, "{p}"),
        }
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            write!(f, "{} := ", self.decl.join(", "))?;
        }
        for (i, c) in self.cmds.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            match a {
                Expr::Pipe(p) => write!(f, "({p})")?,
                other => write!(f, "{other}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for TemplateCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pipe {
            Some(p) => write!(f, "{{{{template {} {p}}}}}", go_quote(&self.name)),
            None => write!(f, "{{{{template {}}}}}", go_quote(&self.name)),
        }
    }
}

fn is_empty_tree(nodes: &[Node]) -> bool {
    nodes.iter().all(|n| match n {
        Node::Text(t) => t.trim().is_empty(),
        _ => false,
    })
}

// ---------------------------------------------------------------------------
// Parser (a port of text/template/parse/parse.go)
// ---------------------------------------------------------------------------

/// What `textOrAction` produced: a node, or one of the delimiting keywords.
enum Parsed {
    Node(Node),
    End,
    Else,
}

impl fmt::Display for Parsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Parsed::End => f.write_str("{{end}}"),
            Parsed::Else => f.write_str("{{else}}"),
            Parsed::Node(_) => f.write_str("node"),
        }
    }
}

type PResult<T> = Result<T, TemplateError>;

struct Parser<'a> {
    name: &'a str,
    items: Vec<Item>,
    idx: usize,
    /// Line of the most recently read token, for error messages.
    line: usize,
    /// Line where the current action started (0 outside actions).
    action_line: usize,
    vars: Vec<String>,
    range_depth: usize,
    depth: usize,
    trees: HashMap<String, Vec<Node>>,
}

impl Parser<'_> {
    fn item(&self, i: usize) -> &Item {
        &self.items[i.min(self.items.len() - 1)]
    }

    fn next(&mut self) -> Item {
        let it = self.item(self.idx).clone();
        self.idx += 1;
        self.line = it.line;
        it
    }

    fn backup(&mut self) {
        self.idx -= 1;
    }

    fn peek(&mut self) -> Item {
        let it = self.item(self.idx).clone();
        self.line = it.line;
        it
    }

    fn next_non_space(&mut self) -> Item {
        loop {
            let it = self.next();
            if it.typ != Tok::Space {
                return it;
            }
        }
    }

    fn peek_non_space(&mut self) -> Item {
        let it = self.next_non_space();
        self.backup();
        it
    }

    fn errorf(&self, msg: impl fmt::Display) -> TemplateError {
        TemplateError(format!("template: {}:{}: {}", self.name, self.line, msg))
    }

    fn unexpected(&self, tok: &Item, context: &str) -> TemplateError {
        if tok.typ == Tok::Error {
            let mut extra = String::new();
            if self.action_line != 0 && self.action_line != tok.line {
                extra = format!(" in action started at {}:{}", self.name, self.action_line);
                if tok.val.ends_with(" action") {
                    extra = extra[" in action".len()..].to_string();
                }
            }
            return self.errorf(format!("{tok}{extra}"));
        }
        self.errorf(format!("unexpected {tok} in {context}"))
    }

    fn expect(&mut self, typ: Tok, context: &str) -> PResult<Item> {
        let tok = self.next_non_space();
        if tok.typ != typ {
            return Err(self.unexpected(&tok, context));
        }
        Ok(tok)
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_PARSE_DEPTH {
            return Err(self.errorf("max expression depth exceeded"));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn parse(mut self) -> PResult<HashMap<String, Vec<Node>>> {
        let mut root = Vec::new();
        while self.peek().typ != Tok::Eof {
            if self.peek().typ == Tok::LeftDelim {
                let save = self.idx;
                self.next();
                if self.next_non_space().typ == Tok::Define {
                    self.parse_definition()?;
                    continue;
                }
                self.idx = save;
            }
            match self.text_or_action()? {
                Parsed::Node(n) => root.push(n),
                other => return Err(self.errorf(format!("unexpected {other}"))),
            }
        }
        let name = self.name.to_string();
        self.add_tree(name, root)?;
        Ok(self.trees)
    }

    fn add_tree(&mut self, name: String, list: Vec<Node>) -> PResult<()> {
        match self.trees.get(&name) {
            Some(existing) if !is_empty_tree(existing) => {
                if !is_empty_tree(&list) {
                    return Err(self.errorf(format!(
                        "template: multiple definition of template {}",
                        go_quote(&name)
                    )));
                }
            }
            _ => {
                self.trees.insert(name, list);
            }
        }
        Ok(())
    }

    fn template_name(&self, tok: &Item, context: &str) -> PResult<String> {
        match tok.typ {
            Tok::Str | Tok::RawString => {
                unquote(&tok.val).map_err(|_| self.errorf("invalid syntax"))
            }
            _ => Err(self.unexpected(tok, context)),
        }
    }

    /// Parse a sub-template body with fresh variables.
    fn sub_tree(&mut self, context: &str) -> PResult<Vec<Node>> {
        let vars = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let range_depth = std::mem::replace(&mut self.range_depth, 0);
        let (list, end) = self.item_list()?;
        self.vars = vars;
        self.range_depth = range_depth;
        if !matches!(end, Parsed::End) {
            return Err(self.errorf(format!("unexpected {end} in {context}")));
        }
        Ok(list)
    }

    fn parse_definition(&mut self) -> PResult<()> {
        let context = "define clause";
        let tok = self.next_non_space();
        let name = self.template_name(&tok, context)?;
        self.expect(Tok::RightDelim, context)?;
        let list = self.sub_tree(context)?;
        self.add_tree(name, list)
    }

    fn item_list(&mut self) -> PResult<(Vec<Node>, Parsed)> {
        let mut list = Vec::new();
        while self.peek_non_space().typ != Tok::Eof {
            match self.text_or_action()? {
                Parsed::Node(n) => list.push(n),
                other => return Ok((list, other)),
            }
        }
        Err(self.errorf("unexpected EOF"))
    }

    fn text_or_action(&mut self) -> PResult<Parsed> {
        let tok = self.next_non_space();
        match tok.typ {
            Tok::Text => Ok(Parsed::Node(Node::Text(tok.val))),
            Tok::LeftDelim => {
                self.action_line = tok.line;
                let r = self.action();
                self.action_line = 0;
                r
            }
            _ => Err(self.unexpected(&tok, "input")),
        }
    }

    fn action(&mut self) -> PResult<Parsed> {
        let tok = self.next_non_space();
        let node = match tok.typ {
            Tok::Block => self.block_control()?,
            Tok::Break | Tok::Continue => {
                let what = if tok.typ == Tok::Break {
                    "break"
                } else {
                    "continue"
                };
                let next = self.next_non_space();
                if next.typ != Tok::RightDelim {
                    return Err(self.unexpected(&next, &format!("{{{{{what}}}}}")));
                }
                if self.range_depth == 0 {
                    return Err(self.errorf(format!("{{{{{what}}}}} outside {{{{range}}}}")));
                }
                if tok.typ == Tok::Break {
                    Node::Break
                } else {
                    Node::Continue
                }
            }
            Tok::Else => {
                // "{{else if ...": leave the "if" for parse_control.
                let peek = self.peek_non_space();
                if peek.typ != Tok::If && peek.typ != Tok::With {
                    self.expect(Tok::RightDelim, "else")?;
                }
                return Ok(Parsed::Else);
            }
            Tok::End => {
                self.expect(Tok::RightDelim, "end")?;
                return Ok(Parsed::End);
            }
            Tok::If => Node::If(self.parse_control("if")?),
            Tok::Range => Node::Range(self.parse_control("range")?),
            Tok::With => Node::With(self.parse_control("with")?),
            Tok::Template => {
                let context = "template clause";
                let tok = self.next_non_space();
                let name = self.template_name(&tok, context)?;
                let pipe = if self.next_non_space().typ != Tok::RightDelim {
                    self.backup();
                    Some(self.pipeline(context, Tok::RightDelim)?)
                } else {
                    None
                };
                Node::Template(TemplateCall {
                    pos: tok.pos,
                    name,
                    pipe,
                })
            }
            _ => {
                self.backup();
                Node::Action(self.pipeline("command", Tok::RightDelim)?)
            }
        };
        Ok(Parsed::Node(node))
    }

    fn block_control(&mut self) -> PResult<Node> {
        let context = "block clause";
        let tok = self.next_non_space();
        let name = self.template_name(&tok, context)?;
        let pipe = self.pipeline(context, Tok::RightDelim)?;
        let list = self.sub_tree(context)?;
        self.add_tree(name.clone(), list)?;
        Ok(Node::Template(TemplateCall {
            pos: tok.pos,
            name,
            pipe: Some(pipe),
        }))
    }

    fn parse_control(&mut self, context: &str) -> PResult<Branch> {
        self.enter()?;
        let nvars = self.vars.len();
        let pipe = self.pipeline(context, Tok::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let (list, next) = self.item_list()?;
        if context == "range" {
            self.range_depth -= 1;
        }
        let else_list = match next {
            Parsed::Else => {
                let chained = match context {
                    "if" => Some(Tok::If),
                    "with" => Some(Tok::With),
                    _ => None,
                };
                match chained {
                    // "{{else if x}}" is "{{else}}{{if x}}...{{end}}{{end}}"
                    // with the inner {{end}} shared.
                    Some(kw) if self.peek().typ == kw => {
                        self.next();
                        let inner = self.parse_control(context)?;
                        Some(vec![if kw == Tok::If {
                            Node::If(inner)
                        } else {
                            Node::With(inner)
                        }])
                    }
                    _ => {
                        let (list, next) = self.item_list()?;
                        if !matches!(next, Parsed::End) {
                            return Err(self.errorf(format!("expected end; found {next}")));
                        }
                        Some(list)
                    }
                }
            }
            _ => None,
        };
        self.vars.truncate(nvars);
        self.leave();
        Ok(Branch {
            pipe,
            list,
            else_list,
        })
    }

    fn pipeline(&mut self, context: &str, end: Tok) -> PResult<Pipe> {
        self.enter()?;
        let pos = self.peek_non_space().pos;
        let mut pipe = Pipe {
            pos,
            is_assign: false,
            decl: Vec::new(),
            cmds: Vec::new(),
        };
        // Declarations or assignments.
        loop {
            let v = self.peek_non_space();
            if v.typ != Tok::Variable {
                break;
            }
            let save = self.idx;
            self.next();
            let next = self.peek_non_space();
            match next.typ {
                Tok::Assign | Tok::Declare => {
                    pipe.is_assign = next.typ == Tok::Assign;
                    self.next_non_space();
                    pipe.decl.push(v.val.clone());
                    self.vars.push(v.val);
                }
                Tok::Char if next.val == "," => {
                    self.next_non_space();
                    pipe.decl.push(v.val.clone());
                    self.vars.push(v.val);
                    if context == "range" && pipe.decl.len() < 2 {
                        match self.peek_non_space().typ {
                            Tok::Variable | Tok::RightDelim | Tok::RightParen => continue,
                            _ => return Err(self.errorf("range can only initialize variables")),
                        }
                    }
                    return Err(self.errorf(format!("too many declarations in {context}")));
                }
                _ => self.idx = save,
            }
            break;
        }
        loop {
            let tok = self.next_non_space();
            match tok.typ {
                t if t == end => {
                    self.check_pipeline(&pipe, context)?;
                    self.leave();
                    return Ok(pipe);
                }
                Tok::Bool
                | Tok::CharConstant
                | Tok::Complex
                | Tok::Dot
                | Tok::Field
                | Tok::Identifier
                | Tok::Number
                | Tok::Nil
                | Tok::RawString
                | Tok::Str
                | Tok::Variable
                | Tok::LeftParen => {
                    self.backup();
                    let cmd = self.command()?;
                    pipe.cmds.push(cmd);
                }
                _ => return Err(self.unexpected(&tok, context)),
            }
        }
    }

    fn check_pipeline(&self, pipe: &Pipe, context: &str) -> PResult<()> {
        if pipe.cmds.is_empty() {
            return Err(self.errorf(format!("missing value for {context}")));
        }
        for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
            if matches!(
                c.args[0],
                Expr::Bool { .. }
                    | Expr::Dot { .. }
                    | Expr::Nil { .. }
                    | Expr::Number { .. }
                    | Expr::Str { .. }
            ) {
                return Err(self.errorf(format!(
                    "non executable command in pipeline stage {}",
                    i + 1
                )));
            }
        }
        Ok(())
    }

    fn command(&mut self) -> PResult<Cmd> {
        let pos = self.peek_non_space().pos;
        let mut args = Vec::new();
        loop {
            self.peek_non_space();
            if let Some(op) = self.operand()? {
                args.push(op);
            }
            let tok = self.next();
            match tok.typ {
                Tok::Space => continue,
                Tok::RightDelim | Tok::RightParen => self.backup(),
                Tok::Pipe => {}
                _ => return Err(self.unexpected(&tok, "operand")),
            }
            break;
        }
        if args.is_empty() {
            return Err(self.errorf("empty command"));
        }
        Ok(Cmd { pos, args })
    }

    fn operand(&mut self) -> PResult<Option<Expr>> {
        let Some(node) = self.term()? else {
            return Ok(None);
        };
        if self.peek().typ != Tok::Field {
            return Ok(Some(node));
        }
        let pos = self.peek().pos;
        let mut fields = Vec::new();
        while self.peek().typ == Tok::Field {
            fields.push(self.next().val[1..].to_string());
        }
        Ok(Some(match node {
            Expr::Field { mut idents, .. } => {
                idents.extend(fields);
                Expr::Field { pos, idents }
            }
            Expr::Variable {
                name, fields: f0, ..
            } => {
                let mut all = f0;
                all.extend(fields);
                Expr::Variable {
                    pos,
                    name,
                    fields: all,
                }
            }
            Expr::Bool { .. }
            | Expr::Str { .. }
            | Expr::Number { .. }
            | Expr::Nil { .. }
            | Expr::Dot { .. } => {
                return Err(self.errorf(format!(
                    "unexpected . after term {}",
                    go_quote(&node.to_string())
                )));
            }
            other => Expr::Chain {
                pos,
                node: Box::new(other),
                fields,
            },
        }))
    }

    fn term(&mut self) -> PResult<Option<Expr>> {
        let tok = self.next_non_space();
        let pos = tok.pos;
        Ok(Some(match tok.typ {
            Tok::Identifier => {
                if func_sig(&tok.val).is_none() {
                    return Err(self.errorf(format!("function {} not defined", go_quote(&tok.val))));
                }
                Expr::Ident { pos, name: tok.val }
            }
            Tok::Dot => Expr::Dot { pos },
            Tok::Nil => Expr::Nil { pos },
            Tok::Variable => {
                if !self.vars.contains(&tok.val) {
                    return Err(self.errorf(format!("undefined variable {}", go_quote(&tok.val))));
                }
                Expr::Variable {
                    pos,
                    name: tok.val,
                    fields: Vec::new(),
                }
            }
            Tok::Field => Expr::Field {
                pos,
                idents: tok.val[1..].split('.').map(str::to_string).collect(),
            },
            Tok::Bool => Expr::Bool {
                pos,
                val: tok.val == "true",
            },
            Tok::CharConstant | Tok::Complex | Tok::Number => {
                let num = parse_number(&tok.val, tok.typ).map_err(|e| self.errorf(e))?;
                Expr::Number { pos, num }
            }
            Tok::LeftParen => Expr::Pipe(Box::new(
                self.pipeline("parenthesized pipeline", Tok::RightParen)?,
            )),
            Tok::Str | Tok::RawString => {
                let val = unquote(&tok.val).map_err(|_| self.errorf("invalid syntax"))?;
                Expr::Str {
                    pos,
                    quoted: tok.val,
                    val,
                }
            }
            _ => {
                self.backup();
                return Ok(None);
            }
        }))
    }
}

// ---------------------------------------------------------------------------
// Literals
// ---------------------------------------------------------------------------

/// Go's `strconv.UnquoteChar`: decode one (possibly escaped) character of a
/// quoted literal. Byte escapes (`\x`, octal) are returned as `Err`-free
/// `Byte` values so that strings can hold them.
enum Unq {
    Char(char),
    Byte(u8),
}

fn unquote_char(s: &str, quote: char) -> Result<(Unq, &str), ()> {
    let mut chars = s.chars();
    let c = chars.next().ok_or(())?;
    if c == quote && (quote == '\'' || quote == '"') {
        return Err(());
    }
    if c != '\\' {
        return Ok((Unq::Char(c), chars.as_str()));
    }
    let c = chars.next().ok_or(())?;
    let rest = chars.as_str();
    let simple = |ch: char| Ok((Unq::Char(ch), rest));
    match c {
        'a' => simple('\x07'),
        'b' => simple('\x08'),
        'f' => simple('\x0c'),
        'n' => simple('\n'),
        'r' => simple('\r'),
        't' => simple('\t'),
        'v' => simple('\x0b'),
        '\\' => simple('\\'),
        '\'' | '"' if c == quote => simple(c),
        'x' | 'u' | 'U' => {
            let n = match c {
                'x' => 2,
                'u' => 4,
                _ => 8,
            };
            let digits = rest.get(..n).ok_or(())?;
            if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(());
            }
            let v = u32::from_str_radix(digits, 16).map_err(|_| ())?;
            let rest = &rest[n..];
            if c == 'x' {
                return Ok((Unq::Byte(v as u8), rest));
            }
            Ok((Unq::Char(char::from_u32(v).ok_or(())?), rest))
        }
        '0'..='7' => {
            let digits = rest.get(..2).ok_or(())?;
            if !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                return Err(());
            }
            let v =
                (c as u32 - '0' as u32) * 64 + u32::from_str_radix(digits, 8).map_err(|_| ())?;
            if v > 255 {
                return Err(());
            }
            Ok((Unq::Byte(v as u8), &rest[2..]))
        }
        _ => Err(()),
    }
}

/// Go's `strconv.Unquote` for `"..."` and `` `...` `` literals.
fn unquote(s: &str) -> Result<String, ()> {
    if let Some(raw) = s.strip_prefix('`').and_then(|r| r.strip_suffix('`')) {
        return Ok(raw.replace('\r', ""));
    }
    let mut body = s
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .ok_or(())?;
    let mut bytes = Vec::with_capacity(body.len());
    while !body.is_empty() {
        let (c, rest) = unquote_char(body, '"')?;
        match c {
            Unq::Char(c) => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            Unq::Byte(b) => bytes.push(b),
        }
        body = rest;
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Go's `underscoreOK`: underscores must separate digits.
fn underscore_ok(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let b = s.as_bytes();
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// Go's `strconv.ParseUint(s, 0, 64)` (no sign allowed).
fn parse_uint0(s: &str) -> Option<u64> {
    if s.is_empty() || !underscore_ok(s) {
        return None;
    }
    let lower = s.to_ascii_lowercase();
    let (digits, radix, had_prefix) = if let Some(r) = lower.strip_prefix("0x") {
        (r.to_string(), 16, true)
    } else if let Some(r) = lower.strip_prefix("0o") {
        (r.to_string(), 8, true)
    } else if let Some(r) = lower.strip_prefix("0b") {
        (r.to_string(), 2, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (lower[1..].to_string(), 8, false)
    } else {
        (lower.clone(), 10, false)
    };
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() {
        return if had_prefix { None } else { Some(0) };
    }
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(&digits, radix).ok()
}

/// Go's `strconv.ParseInt(s, 0, 64)`.
fn parse_int0(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let u = parse_uint0(body)?;
    if neg {
        if u <= i64::MAX as u64 + 1 {
            Some((u as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(u).ok()
    }
}

/// Go's `strconv.ParseFloat` for decimal literals.
fn parse_float(s: &str) -> Option<f64> {
    if !underscore_ok(s) {
        return None;
    }
    let lower = s.trim_start_matches(['+', '-']).to_ascii_lowercase();
    if lower.starts_with("0x") || lower.contains("inf") || lower.contains("nan") {
        return None;
    }
    let clean: String = s.chars().filter(|&c| c != '_').collect();
    let f: f64 = clean.parse().ok()?;
    f.is_finite().then_some(f)
}

fn is_hex_int(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 2 && b[0] == b'0' && (b[1] == b'x' || b[1] == b'X') && !s.contains(['p', 'P'])
}

/// Go's `parse.newNumber`.
fn parse_number(text: &str, typ: Tok) -> Result<Num, String> {
    let mut n = Num {
        text: text.to_string(),
        is_char: false,
        is_int: false,
        is_uint: false,
        is_float: false,
        i: 0,
        u: 0,
        f: 0.0,
    };
    if typ == Tok::CharConstant {
        let (c, tail) = unquote_char(&text[1..], '\'').map_err(|_| "invalid syntax".to_string())?;
        if tail != "'" {
            return Err(format!("malformed character constant: {text}"));
        }
        let r = match c {
            Unq::Char(c) => c as u32,
            Unq::Byte(b) => b as u32,
        };
        n.is_char = true;
        n.is_int = true;
        n.is_uint = true;
        n.is_float = true;
        n.i = r as i64;
        n.u = r as u64;
        n.f = r as f64;
        return Ok(n);
    }
    if typ == Tok::Complex || text.ends_with('i') {
        return Err(format!(
            "complex constants are not supported: {}",
            go_quote(text)
        ));
    }
    if let Some(u) = parse_uint0(text) {
        n.is_uint = true;
        n.u = u;
    }
    if let Some(i) = parse_int0(text) {
        n.is_int = true;
        n.i = i;
        if i == 0 {
            n.is_uint = true;
            n.u = 0;
        }
    }
    if n.is_int {
        n.is_float = true;
        n.f = n.i as f64;
    } else if n.is_uint {
        n.is_float = true;
        n.f = n.u as f64;
    } else if let Some(f) = parse_float(text) {
        if !text.contains(['.', 'e', 'E', 'p', 'P']) {
            return Err(format!("integer overflow: {}", go_quote(text)));
        }
        n.is_float = true;
        n.f = f;
        if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
            n.is_int = true;
            n.i = f as i64;
        }
        if f.fract() == 0.0 && f >= 0.0 && f < u64::MAX as f64 {
            n.is_uint = true;
            n.u = f as u64;
        }
    }
    if !n.is_int && !n.is_uint && !n.is_float {
        return Err(format!("illegal number syntax: {}", go_quote(text)));
    }
    Ok(n)
}

// ---------------------------------------------------------------------------
// Runtime values
// ---------------------------------------------------------------------------

/// A runtime value: a view into the JSON data or a value computed by the
/// template.
#[derive(Clone, Debug)]
enum Val<'a> {
    /// Go's invalid `reflect.Value`, e.g. a missing map key: `<no value>`.
    Missing,
    /// A nil value (JSON `null`, the `nil` literal): `<nil>`.
    Nil,
    Bool(bool),
    Int(i64),
    Uint(u64),
    /// A `uint8`, from indexing a string.
    Byte(u8),
    Float(f64),
    Str(Cow<'a, str>),
    Arr(List<'a>),
    Obj(&'a Map<String, Value>),
}

#[derive(Clone, Debug)]
enum List<'a> {
    Json(&'a [Value]),
    Owned(Rc<[Val<'a>]>),
}

impl<'a> List<'a> {
    fn len(&self) -> usize {
        match self {
            List::Json(a) => a.len(),
            List::Owned(a) => a.len(),
        }
    }

    fn get(&self, i: usize) -> Val<'a> {
        match self {
            List::Json(a) => from_json(&a[i]),
            List::Owned(a) => a[i].clone(),
        }
    }

    fn slice(&self, from: usize, to: usize) -> List<'a> {
        match self {
            List::Json(a) => List::Json(&a[from..to]),
            List::Owned(a) => List::Owned(a[from..to].to_vec().into()),
        }
    }

    fn all_strings(&self) -> bool {
        match self {
            List::Json(a) => a.iter().all(Value::is_string),
            List::Owned(a) => a.iter().all(|v| matches!(v, Val::Str(_))),
        }
    }

    fn strings(&self) -> Vec<Cow<'a, str>> {
        (0..self.len())
            .filter_map(|i| match self.get(i) {
                Val::Str(s) => Some(s),
                _ => None,
            })
            .collect()
    }
}

fn from_json(v: &Value) -> Val<'_> {
    match v {
        Value::Null => Val::Nil,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Val::Int(i)
            } else if let Some(u) = n.as_u64() {
                Val::Uint(u)
            } else {
                Val::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => Val::Str(Cow::Borrowed(s)),
        Value::Array(a) => Val::Arr(List::Json(a)),
        Value::Object(m) => Val::Obj(m),
    }
}

fn str_val<'a>(s: String) -> Val<'a> {
    Val::Str(Cow::Owned(s))
}

/// The Go type a value stands for, as `reflect.Type.String()` spells it.
fn type_name(v: &Val) -> String {
    match v {
        Val::Missing | Val::Nil => "interface {}".into(),
        Val::Bool(_) => "bool".into(),
        Val::Int(_) => "int".into(),
        Val::Uint(_) => "uint64".into(),
        Val::Byte(_) => "uint8".into(),
        Val::Float(_) => "float64".into(),
        Val::Str(_) => "string".into(),
        Val::Arr(l) if l.len() > 0 && l.all_strings() => "[]string".into(),
        Val::Arr(_) => "[]interface {}".into(),
        Val::Obj(m) if !m.is_empty() && m.values().all(Value::is_string) => {
            "map[string]string".into()
        }
        Val::Obj(_) => "map[string]interface {}".into(),
    }
}

/// Go's `isTrue`.
fn truth(v: &Val) -> bool {
    match v {
        Val::Missing | Val::Nil => false,
        Val::Bool(b) => *b,
        Val::Int(i) => *i != 0,
        Val::Uint(u) => *u != 0,
        Val::Byte(b) => *b != 0,
        Val::Float(f) => *f != 0.0,
        Val::Str(s) => !s.is_empty(),
        Val::Arr(l) => l.len() > 0,
        Val::Obj(m) => !m.is_empty(),
    }
}

fn sorted_entries(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

// ---------------------------------------------------------------------------
// Functions
// ---------------------------------------------------------------------------

/// Go parameter types, as far as argument checking is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum P {
    /// `interface{}`: any value; a missing value becomes nil.
    Any,
    /// `reflect.Value` (builtins): any value, passed through unchanged.
    Value,
    Str,
    Int,
    StrSlice,
}

impl P {
    fn go_name(self) -> &'static str {
        match self {
            P::Any => "interface {}",
            P::Value => "reflect.Value",
            P::Str => "string",
            P::Int => "int",
            P::StrSlice => "[]string",
        }
    }
}

struct Sig {
    params: &'static [P],
    variadic: Option<P>,
}

/// Signatures of the functions available to templates: Go's builtins (minus
/// `call`) and Podman's `report.DefaultFuncs`.
fn func_sig(name: &str) -> Option<Sig> {
    use P::*;
    let (params, variadic): (&'static [P], Option<P>) = match name {
        "and" | "or" | "eq" | "index" | "slice" => (&[Value], Some(Value)),
        "not" | "len" => (&[Value], None),
        "ne" | "lt" | "le" | "gt" | "ge" => (&[Value, Value], None),
        "print" | "println" | "html" | "js" | "urlquery" => (&[], Some(Any)),
        "printf" => (&[Str], Some(Any)),
        "json" => (&[Any], None),
        "lower" | "upper" | "title" => (&[Str], None),
        "split" => (&[Str, Str], None),
        "join" => (&[StrSlice, Str], None),
        "pad" => (&[Str, Int, Int], None),
        "truncate" => (&[Str, Int], None),
        _ => return None,
    };
    Some(Sig { params, variadic })
}

fn call_func<'a>(name: &str, mut a: Vec<Val<'a>>) -> Result<Val<'a>, String> {
    let s = |v: &Val<'a>| match v {
        Val::Str(s) => s.to_string(),
        _ => String::new(),
    };
    let int = |v: &Val| match v {
        Val::Int(i) => *i,
        _ => 0,
    };
    Ok(match name {
        "not" => Val::Bool(!truth(&a[0])),
        "len" => Val::Int(length(&a[0])? as i64),
        "index" => {
            let item = a.remove(0);
            index(item, &a)?
        }
        "slice" => {
            let item = a.remove(0);
            slice(item, &a)?
        }
        "print" => str_val(sprint(&a)),
        "println" => str_val(sprintln(&a)),
        "printf" => {
            let format = s(&a[0]);
            str_val(sprintf(&format, &a[1..]))
        }
        "html" => str_val(html_escape(&eval_args(&a))),
        "js" => str_val(js_escape(&eval_args(&a))),
        "urlquery" => str_val(query_escape(&eval_args(&a))),
        "eq" => Val::Bool(eq(&a[0], &a[1..])?),
        "ne" => Val::Bool(!eq(&a[0], &a[1..2])?),
        "lt" => Val::Bool(lt(&a[0], &a[1])?),
        "le" => Val::Bool(le(&a[0], &a[1])?),
        "gt" => Val::Bool(!le(&a[0], &a[1])?),
        "ge" => Val::Bool(!lt(&a[0], &a[1])?),
        "json" => {
            let mut out = String::new();
            json_val(&a[0], &mut out);
            str_val(out)
        }
        "lower" => str_val(s(&a[0]).chars().map(simple_lower).collect()),
        "upper" => str_val(s(&a[0]).chars().map(simple_upper).collect()),
        "title" => str_val(go_title(&s(&a[0]))),
        "split" => {
            let (text, sep) = (s(&a[0]), s(&a[1]));
            let parts: Vec<Val<'a>> = if sep.is_empty() {
                text.chars().map(|c| str_val(c.to_string())).collect()
            } else {
                text.split(sep.as_str())
                    .map(|p| str_val(p.to_string()))
                    .collect()
            };
            Val::Arr(List::Owned(parts.into()))
        }
        "join" => {
            let Val::Arr(list) = &a[0] else {
                return Ok(str_val(String::new()));
            };
            str_val(list.strings().join(&s(&a[1])))
        }
        "pad" => {
            let text = s(&a[0]);
            if text.is_empty() {
                return Ok(str_val(text));
            }
            let (prefix, suffix) = (int(&a[1]), int(&a[2]));
            if prefix < 0 || suffix < 0 {
                return Err("strings: negative Repeat count".into());
            }
            str_val(format!(
                "{}{text}{}",
                " ".repeat(prefix as usize),
                " ".repeat(suffix as usize)
            ))
        }
        "truncate" => {
            let text = s(&a[0]);
            let n = int(&a[1]);
            if (text.len() as i64) < n {
                return Ok(str_val(text));
            }
            if n < 0 {
                return Err(format!("runtime error: slice bounds out of range [:{n}]"));
            }
            str_val(String::from_utf8_lossy(&text.as_bytes()[..n as usize]).into_owned())
        }
        _ => return Err(format!("function {} not defined", go_quote(name))),
    })
}

fn length(v: &Val) -> Result<usize, String> {
    match v {
        Val::Missing => Err("reflect: call of reflect.Value.Type on zero Value".into()),
        Val::Nil => Err("len of nil pointer".into()),
        Val::Str(s) => Ok(s.len()),
        Val::Arr(l) => Ok(l.len()),
        Val::Obj(m) => Ok(m.len()),
        other => Err(format!("len of type {}", type_name(other))),
    }
}

fn index_arg(ix: &Val, cap: usize) -> Result<usize, String> {
    let x: i64 = match ix {
        Val::Int(i) => *i,
        Val::Uint(u) => *u as i64,
        Val::Byte(b) => *b as i64,
        Val::Missing | Val::Nil => return Err("cannot index slice/array with nil".into()),
        other => {
            return Err(format!(
                "cannot index slice/array with type {}",
                type_name(other)
            ));
        }
    };
    if x < 0 || x as u64 > cap as u64 {
        return Err(format!("index out of range: {x}"));
    }
    Ok(x as usize)
}

fn index<'a>(mut item: Val<'a>, idxs: &[Val<'a>]) -> Result<Val<'a>, String> {
    if matches!(item, Val::Missing | Val::Nil) {
        return Err("index of untyped nil".into());
    }
    for ix in idxs {
        item = match &item {
            Val::Missing | Val::Nil => return Err("index of nil pointer".into()),
            Val::Arr(l) => {
                let x = index_arg(ix, l.len())?;
                if x == l.len() {
                    return Err("reflect: slice index out of range".into());
                }
                l.get(x)
            }
            Val::Str(s) => {
                let x = index_arg(ix, s.len())?;
                if x == s.len() {
                    return Err("reflect: string index out of range".into());
                }
                Val::Byte(s.as_bytes()[x])
            }
            Val::Obj(m) => match ix {
                Val::Str(k) => match m.get(k.as_ref()) {
                    Some(v) => from_json(v),
                    // The zero value of the map's element type: "" for a
                    // map[string]string, nil (no value) otherwise.
                    None if m.values().all(Value::is_string) => str_val(String::new()),
                    None => Val::Missing,
                },
                Val::Missing | Val::Nil => {
                    return Err("value is nil; should be of type string".into());
                }
                other => {
                    return Err(format!(
                        "value has type {}; should be string",
                        type_name(other)
                    ));
                }
            },
            other => return Err(format!("can't index item of type {}", type_name(other))),
        };
    }
    Ok(item)
}

fn slice<'a>(item: Val<'a>, idxs: &[Val<'a>]) -> Result<Val<'a>, String> {
    if matches!(item, Val::Missing | Val::Nil) {
        return Err("slice of untyped nil".into());
    }
    if idxs.len() > 3 {
        return Err(format!("too many slice indexes: {}", idxs.len()));
    }
    let len = match &item {
        Val::Str(s) => {
            if idxs.len() == 3 {
                return Err("cannot 3-index slice a string".into());
            }
            s.len()
        }
        Val::Arr(l) => l.len(),
        other => return Err(format!("can't slice item of type {}", type_name(other))),
    };
    let mut idx = [0, len, len];
    for (i, ix) in idxs.iter().enumerate() {
        idx[i] = index_arg(ix, len)?;
    }
    if idx[0] > idx[1] {
        return Err(format!("invalid slice index: {} > {}", idx[0], idx[1]));
    }
    if idxs.len() == 3 && idx[1] > idx[2] {
        return Err(format!("invalid slice index: {} > {}", idx[1], idx[2]));
    }
    Ok(match item {
        Val::Str(s) => str_val(String::from_utf8_lossy(&s.as_bytes()[idx[0]..idx[1]]).into_owned()),
        Val::Arr(l) => Val::Arr(l.slice(idx[0], idx[1])),
        _ => unreachable!("checked above"),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Invalid,
    Bool,
    Int,
    Uint,
    Float,
    Str,
}

fn basic_kind(v: &Val) -> Kind {
    match v {
        Val::Missing | Val::Nil | Val::Arr(_) | Val::Obj(_) => Kind::Invalid,
        Val::Bool(_) => Kind::Bool,
        Val::Int(_) => Kind::Int,
        Val::Uint(_) | Val::Byte(_) => Kind::Uint,
        Val::Float(_) => Kind::Float,
        Val::Str(_) => Kind::Str,
    }
}

fn as_u64(v: &Val) -> u64 {
    match v {
        Val::Uint(u) => *u,
        Val::Byte(b) => *b as u64,
        _ => 0,
    }
}

fn is_nilish(v: &Val) -> bool {
    matches!(v, Val::Missing | Val::Nil)
}

/// Go's `eq`: true if `a` equals any of `rest`.
fn eq(a: &Val, rest: &[Val]) -> Result<bool, String> {
    if rest.is_empty() {
        return Err("missing argument for comparison".into());
    }
    let k1 = basic_kind(a);
    for b in rest {
        let k2 = basic_kind(b);
        let truth = if k1 != k2 {
            match (a, k2) {
                (Val::Int(i), Kind::Uint) => *i >= 0 && *i as u64 == as_u64(b),
                (_, Kind::Int) if k1 == Kind::Uint => match b {
                    Val::Int(i) => *i >= 0 && as_u64(a) == *i as u64,
                    _ => false,
                },
                _ if !is_nilish(a) && !is_nilish(b) => {
                    return Err("incompatible types for comparison".into());
                }
                _ => false,
            }
        } else {
            match (a, b) {
                (Val::Bool(x), Val::Bool(y)) => x == y,
                (Val::Int(x), Val::Int(y)) => x == y,
                (Val::Float(x), Val::Float(y)) => x == y,
                (Val::Str(x), Val::Str(y)) => x == y,
                _ if k1 == Kind::Uint => as_u64(a) == as_u64(b),
                _ if is_nilish(a) || is_nilish(b) => is_nilish(a) == is_nilish(b),
                _ => {
                    return Err(format!(
                        "non-comparable type {}: {}",
                        sprint(std::slice::from_ref(b)),
                        type_name(b)
                    ));
                }
            }
        };
        if truth {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Go's `lt`.
fn lt(a: &Val, b: &Val) -> Result<bool, String> {
    let k1 = basic_kind(a);
    let k2 = basic_kind(b);
    if k1 == Kind::Invalid || k2 == Kind::Invalid {
        return Err("invalid type for comparison".into());
    }
    if k1 != k2 {
        return match (a, b) {
            (Val::Int(i), _) if k2 == Kind::Uint => Ok(*i < 0 || (*i as u64) < as_u64(b)),
            (_, Val::Int(i)) if k1 == Kind::Uint => Ok(*i >= 0 && as_u64(a) < *i as u64),
            _ => Err("incompatible types for comparison".into()),
        };
    }
    Ok(match (a, b) {
        (Val::Int(x), Val::Int(y)) => x < y,
        (Val::Float(x), Val::Float(y)) => x < y,
        (Val::Str(x), Val::Str(y)) => x < y,
        _ if k1 == Kind::Uint => as_u64(a) < as_u64(b),
        _ => return Err("invalid type for comparison".into()),
    })
}

fn le(a: &Val, b: &Val) -> Result<bool, String> {
    if lt(a, b)? {
        return Ok(true);
    }
    eq(a, std::slice::from_ref(b))
}

/// Go's `evalArgs` for `html`, `js` and `urlquery`.
fn eval_args(a: &[Val]) -> String {
    if let [Val::Str(s)] = a {
        return s.to_string();
    }
    let printable: Vec<Val> = a
        .iter()
        .map(|v| {
            if is_nilish(v) {
                str_val("<no value>".into())
            } else {
                v.clone()
            }
        })
        .collect();
    sprint(&printable)
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c if !c.is_ascii() && !is_print(c) => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Go's `unicode.ToUpper` (simple case mapping).
fn simple_upper(c: char) -> char {
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// Go's `unicode.ToLower` (simple case mapping).
fn simple_lower(c: char) -> char {
    if c == '\u{130}' {
        return 'i';
    }
    let mut low = c.to_lowercase();
    match (low.next(), low.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// Go's deprecated `strings.Title`: upper-case the first letter of each word.
fn go_title(s: &str) -> String {
    fn is_separator(r: char) -> bool {
        if r.is_ascii() {
            return !(r.is_ascii_alphanumeric() || r == '_');
        }
        if r.is_alphabetic() || r.is_numeric() {
            return false;
        }
        r.is_whitespace()
    }
    fn to_title(r: char) -> char {
        match r {
            'Ǆ' | 'ǅ' | 'ǆ' => 'ǅ',
            'Ǉ' | 'ǈ' | 'ǉ' => 'ǈ',
            'Ǌ' | 'ǋ' | 'ǌ' => 'ǋ',
            'Ǳ' | 'ǲ' | 'ǳ' => 'ǲ',
            r => simple_upper(r),
        }
    }
    let mut prev = ' ';
    s.chars()
        .map(|r| {
            let out = if is_separator(prev) { to_title(r) } else { r };
            prev = r;
            out
        })
        .collect()
}

// ---------------------------------------------------------------------------
// JSON (Go's encoding/json with SetEscapeHTML(false), as Podman's `json`)
// ---------------------------------------------------------------------------

fn json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_float(f: f64, out: &mut String) {
    if !f.is_finite() {
        out.push_str("null");
        return;
    }
    let abs = f.abs();
    let fmtc = if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        'e'
    } else {
        'f'
    };
    let mut s = format_float(f, fmtc, -1);
    if fmtc == 'e' {
        // Clean up e-09 to e-9.
        let b = s.as_bytes();
        let n = b.len();
        if n >= 4 && b[n - 4] == b'e' && b[n - 3] == b'-' && b[n - 2] == b'0' {
            s.remove(n - 2);
        }
    }
    out.push_str(&s);
}

fn json_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                json_float(n.as_f64().unwrap_or(0.0), out);
            }
        }
        Value::String(s) => json_str(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_value(e, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, e)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(k, out);
                out.push(':');
                json_value(e, out);
            }
            out.push('}');
        }
    }
}

fn json_val(v: &Val, out: &mut String) {
    match v {
        Val::Missing | Val::Nil => out.push_str("null"),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Val::Uint(u) => {
            let _ = write!(out, "{u}");
        }
        Val::Byte(b) => {
            let _ = write!(out, "{b}");
        }
        Val::Float(f) => json_float(*f, out),
        Val::Str(s) => json_str(s, out),
        Val::Arr(List::Json(a)) => json_value(&Value::Array(a.to_vec()), out),
        Val::Arr(List::Owned(a)) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_val(e, out);
            }
            out.push(']');
        }
        Val::Obj(m) => {
            out.push('{');
            for (i, (k, e)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(k, out);
                out.push(':');
                json_value(e, out);
            }
            out.push('}');
        }
    }
}

// ---------------------------------------------------------------------------
// fmt (a port of the parts of Go's fmt that templates reach)
// ---------------------------------------------------------------------------

/// Go's `strconv.IsPrint`, approximated with the standard library's Unicode
/// tables.
fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xFFFE | 0xFFFF | 0xE000..=0xF8FF | 0xE0001 | 0xE0020..=0xE007F
        | 0xF0000..=0x10FFFF)
}

/// Go's `strconv.Quote` family.
fn quote_with(s: &str, quote: char, ascii_only: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for r in s.chars() {
        if r == quote || r == '\\' {
            out.push('\\');
            out.push(r);
            continue;
        }
        if if ascii_only {
            r.is_ascii() && is_print(r)
        } else {
            is_print(r)
        } {
            out.push(r);
            continue;
        }
        match r {
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            r if (r as u32) < 0x20 || r == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", r as u32);
            }
            r if (r as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", r as u32);
            }
            r => {
                let _ = write!(out, "\\U{:08x}", r as u32);
            }
        }
    }
    out.push(quote);
    out
}

fn go_quote(s: &str) -> String {
    quote_with(s, '"', false)
}

fn can_backquote(s: &str) -> bool {
    s.chars().all(|c| {
        c != '\u{FEFF}' && c != '\u{FFFD}' && c != '`' && c != '\x7f' && (c >= ' ' || c == '\t')
    })
}

/// Decimal digits `d` of a non-negative float with the decimal point at `dp`:
/// value = 0.d × 10^dp. Zero has no digits.
fn parse_sci(s: &str) -> (Vec<u8>, i64) {
    let (mant, exp) = s.split_once('e').unwrap_or((s, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let mut d: Vec<u8> = mant.bytes().filter(|b| *b != b'.').collect();
    while d.len() > 1 && d.last() == Some(&b'0') {
        d.pop();
    }
    if d == [b'0'] {
        return (Vec::new(), 0);
    }
    (d, exp + 1)
}

/// Go's `strconv.FormatFloat(v, fmt, prec, 64)` for fmt in `e E f g G`.
fn format_float(v: f64, fmtc: char, prec: i64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let mut out = String::new();
    if v.is_sign_negative() {
        out.push('-');
    }
    let a = v.abs();
    match fmtc {
        'b' => {
            fmt_b(&mut out, a);
            return out;
        }
        'x' | 'X' => {
            fmt_x(&mut out, a, prec, fmtc);
            return out;
        }
        _ => {}
    }
    let shortest = prec < 0;
    let prec = if matches!(fmtc, 'g' | 'G') && prec == 0 {
        1
    } else {
        prec
    };
    if fmtc == 'f' && !shortest {
        let _ = write!(out, "{:.*}", prec as usize, a);
        return out;
    }
    let (d, dp) = if a == 0.0 {
        (Vec::new(), 0)
    } else if shortest {
        parse_sci(&format!("{a:e}"))
    } else {
        let digits = match fmtc {
            'e' | 'E' => prec + 1,
            _ => prec,
        };
        parse_sci(&format!("{:.*e}", (digits - 1) as usize, a))
    };
    let nd = d.len() as i64;
    let mut prec = prec;
    if shortest {
        prec = match fmtc {
            'e' | 'E' => nd - 1,
            'f' => (nd - dp).max(0),
            _ => nd,
        };
    }
    match fmtc {
        'e' | 'E' => fmt_e(&mut out, &d, dp, prec, fmtc),
        'f' => fmt_f(&mut out, &d, dp, prec),
        _ => {
            let mut eprec = prec;
            if eprec > nd && nd >= dp {
                eprec = nd;
            }
            if shortest {
                eprec = 6;
            }
            let exp = dp - 1;
            if exp < -4 || exp >= eprec {
                if prec > nd {
                    prec = nd;
                }
                let e = if fmtc == 'G' { 'E' } else { 'e' };
                fmt_e(&mut out, &d, dp, prec - 1, e);
            } else {
                if prec > dp {
                    prec = nd;
                }
                fmt_f(&mut out, &d, dp, (prec - dp).max(0));
            }
        }
    }
    out
}

/// Mantissa (with the implicit bit) and unbiased binary exponent of a
/// non-negative finite float, like strconv's `bits` decoding.
fn float_parts(a: f64) -> (u64, i64) {
    let bits = a.to_bits();
    let exp_field = ((bits >> 52) & 0x7ff) as i64;
    let mut mant = bits & ((1 << 52) - 1);
    let exp = if exp_field == 0 {
        1
    } else {
        mant |= 1 << 52;
        exp_field
    };
    (mant, exp - 1023)
}

/// strconv's `%b`: decimal mantissa and binary exponent, e.g. `4503599627370496p-52`.
fn fmt_b(out: &mut String, a: f64) {
    let (mant, exp) = float_parts(a);
    let exp = exp - 52;
    let _ = write!(out, "{mant}p{}{exp}", if exp >= 0 { "+" } else { "" });
}

/// strconv's `%x`/`%X`: `0x1.8p+00`.
fn fmt_x(out: &mut String, a: f64, prec: i64, fmtc: char) {
    let (mut mant, mut exp) = float_parts(a);
    if mant == 0 {
        exp = 0;
    }
    // Shift so that the leading 1 (if any) is at bit 60.
    mant <<= 60 - 52;
    while mant != 0 && mant & (1 << 60) == 0 {
        mant <<= 1;
        exp -= 1;
    }
    if (0..15).contains(&prec) {
        let shift = (prec * 4) as u32;
        let extra = (mant << shift) & ((1 << 60) - 1);
        mant >>= 60 - shift;
        if extra | (mant & 1) > 1 << 59 {
            mant += 1;
        }
        mant <<= 60 - shift;
        if mant & (1 << 61) != 0 {
            mant >>= 1;
            exp += 1;
        }
    }
    let hex: &[u8; 16] = if fmtc == 'X' {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    out.push('0');
    out.push(fmtc);
    out.push(if (mant >> 60) & 1 == 1 { '1' } else { '0' });
    mant <<= 4;
    if (prec < 0 && mant != 0) || prec > 0 {
        out.push('.');
        let mut i = 0;
        while if prec < 0 { mant != 0 } else { i < prec } {
            out.push(hex[((mant >> 60) & 15) as usize] as char);
            mant <<= 4;
            i += 1;
        }
    }
    out.push(if fmtc == 'X' { 'P' } else { 'p' });
    out.push(if exp < 0 { '-' } else { '+' });
    let _ = write!(out, "{:02}", exp.abs());
}

fn fmt_e(out: &mut String, d: &[u8], dp: i64, prec: i64, e: char) {
    out.push(d.first().map_or('0', |&c| c as char));
    if prec > 0 {
        out.push('.');
        let mut i = 1usize;
        let m = d.len().min(prec as usize + 1);
        if i < m {
            out.extend(d[i..m].iter().map(|&c| c as char));
            i = m;
        }
        while (i as i64) <= prec {
            out.push('0');
            i += 1;
        }
    }
    out.push(e);
    let mut exp = if d.is_empty() { 0 } else { dp - 1 };
    if exp < 0 {
        out.push('-');
        exp = -exp;
    } else {
        out.push('+');
    }
    if exp < 10 {
        out.push('0');
    }
    let _ = write!(out, "{exp}");
}

fn fmt_f(out: &mut String, d: &[u8], dp: i64, prec: i64) {
    if dp > 0 {
        let m = (d.len() as i64).min(dp) as usize;
        out.extend(d[..m].iter().map(|&c| c as char));
        for _ in m as i64..dp {
            out.push('0');
        }
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        for i in 1..=prec {
            let j = dp + i - 1;
            let c = if j >= 0 && (j as usize) < d.len() {
                d[j as usize] as char
            } else {
                '0'
            };
            out.push(c);
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Flags {
    plus: bool,
    minus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    sharp_v: bool,
    wid: i64,
    wid_present: bool,
    prec: i64,
    prec_present: bool,
}

#[derive(Default)]
struct Printer {
    buf: String,
    f: Flags,
}

impl Printer {
    fn write_padding(&mut self, n: i64) {
        let c = if self.f.zero { '0' } else { ' ' };
        for _ in 0..n.max(0) {
            self.buf.push(c);
        }
    }

    fn pad(&mut self, s: &str) {
        if !self.f.wid_present || self.f.wid == 0 {
            self.buf.push_str(s);
            return;
        }
        let width = self.f.wid - s.chars().count() as i64;
        if self.f.minus {
            self.buf.push_str(s);
            self.write_padding(width);
        } else {
            self.write_padding(width);
            self.buf.push_str(s);
        }
    }

    fn truncate<'s>(&self, s: &'s str) -> &'s str {
        if self.f.prec_present
            && let Some((i, _)) = s.char_indices().nth(self.f.prec.max(0) as usize)
        {
            return &s[..i];
        }
        s
    }

    fn bad_verb(&mut self, arg: &Val, verb: char) {
        self.buf.push_str("%!");
        self.buf.push(verb);
        self.buf.push('(');
        if is_nilish(arg) {
            self.buf.push_str("<nil>");
        } else {
            self.buf.push_str(&type_name(arg));
            self.buf.push('=');
            self.print_arg(arg, 'v');
        }
        self.buf.push(')');
    }

    fn print_arg(&mut self, arg: &Val, verb: char) {
        if is_nilish(arg) {
            match verb {
                'T' | 'v' => self.pad("<nil>"),
                _ => self.bad_verb(arg, verb),
            }
            return;
        }
        match verb {
            'T' => {
                let t = type_name(arg);
                self.fmt_s(&t);
                return;
            }
            'p' => {
                self.bad_verb(arg, verb);
                return;
            }
            _ => {}
        }
        match arg {
            Val::Bool(b) => match verb {
                't' | 'v' => self.pad(if *b { "true" } else { "false" }),
                _ => self.bad_verb(arg, verb),
            },
            Val::Int(i) => self.fmt_integer(*i as u64, true, verb, arg),
            Val::Uint(u) => self.fmt_integer(*u, false, verb, arg),
            Val::Byte(b) => self.fmt_integer(*b as u64, false, verb, arg),
            Val::Float(f) => match verb {
                'v' => self.fmt_float(*f, 'g', -1),
                'b' | 'g' | 'G' | 'x' | 'X' => self.fmt_float(*f, verb, -1),
                'f' | 'e' | 'E' | 'F' => self.fmt_float(*f, verb, 6),
                _ => self.bad_verb(arg, verb),
            },
            Val::Str(s) => match verb {
                'v' if self.f.sharp_v => self.fmt_q(s),
                'v' | 's' => self.fmt_s(s),
                'x' => self.fmt_sx(s, false),
                'X' => self.fmt_sx(s, true),
                'q' => self.fmt_q(s),
                _ => self.bad_verb(arg, verb),
            },
            Val::Arr(l) => {
                self.buf.push('[');
                for i in 0..l.len() {
                    if i > 0 {
                        self.buf.push(' ');
                    }
                    self.print_elem(&l.get(i), verb);
                }
                self.buf.push(']');
            }
            Val::Obj(m) => {
                self.buf.push_str("map[");
                for (i, (k, v)) in sorted_entries(m).into_iter().enumerate() {
                    if i > 0 {
                        self.buf.push(' ');
                    }
                    self.print_elem(&Val::Str(Cow::Borrowed(k)), verb);
                    self.buf.push(':');
                    self.print_elem(&from_json(v), verb);
                }
                self.buf.push(']');
            }
            Val::Missing | Val::Nil => unreachable!("handled above"),
        }
    }

    /// An element of a slice or map: nil interfaces print as `<nil>` whatever
    /// the verb.
    fn print_elem(&mut self, v: &Val, verb: char) {
        if is_nilish(v) {
            self.buf.push_str("<nil>");
        } else {
            self.print_arg(v, verb);
        }
    }

    fn fmt_s(&mut self, s: &str) {
        let s = self.truncate(s);
        self.pad(s);
    }

    fn fmt_q(&mut self, s: &str) {
        let s = self.truncate(s);
        if self.f.sharp && can_backquote(s) {
            self.pad(&format!("`{s}`"));
        } else {
            let q = quote_with(s, '"', self.f.plus);
            self.pad(&q);
        }
    }

    fn fmt_sx(&mut self, s: &str, upper: bool) {
        let digits: &[u8; 17] = if upper {
            b"0123456789ABCDEFX"
        } else {
            b"0123456789abcdefx"
        };
        let b = s.as_bytes();
        let mut length = b.len() as i64;
        if self.f.prec_present && self.f.prec < length {
            length = self.f.prec;
        }
        let mut width = 2 * length;
        if width > 0 {
            if self.f.space {
                if self.f.sharp {
                    width *= 2;
                }
                width += length - 1;
            } else if self.f.sharp {
                width += 2;
            }
        } else {
            if self.f.wid_present {
                self.write_padding(self.f.wid);
            }
            return;
        }
        if self.f.wid_present && self.f.wid > width && !self.f.minus {
            self.write_padding(self.f.wid - width);
        }
        if self.f.sharp {
            self.buf.push('0');
            self.buf.push(digits[16] as char);
        }
        for (i, &c) in b.iter().take(length as usize).enumerate() {
            if self.f.space && i > 0 {
                self.buf.push(' ');
                if self.f.sharp {
                    self.buf.push('0');
                    self.buf.push(digits[16] as char);
                }
            }
            self.buf.push(digits[(c >> 4) as usize] as char);
            self.buf.push(digits[(c & 0xF) as usize] as char);
        }
        if self.f.wid_present && self.f.wid > width && self.f.minus {
            self.write_padding(self.f.wid - width);
        }
    }

    fn fmt_integer(&mut self, u: u64, signed: bool, verb: char, arg: &Val) {
        match verb {
            'v' | 'd' => self.fmt_int(u, 10, signed, verb, false),
            'b' => self.fmt_int(u, 2, signed, verb, false),
            'o' | 'O' => self.fmt_int(u, 8, signed, verb, false),
            'x' => self.fmt_int(u, 16, signed, verb, false),
            'X' => self.fmt_int(u, 16, signed, verb, true),
            'c' => {
                let c = rune_of(u);
                self.pad(c.encode_utf8(&mut [0; 4]));
            }
            'q' => {
                let q = quote_with(rune_of(u).encode_utf8(&mut [0; 4]), '\'', self.f.plus);
                self.pad(&q);
            }
            'U' => self.fmt_unicode(u),
            _ => self.bad_verb(arg, verb),
        }
    }

    fn fmt_int(&mut self, u: u64, base: u64, signed: bool, verb: char, upper: bool) {
        let negative = signed && (u as i64) < 0;
        let mut u = if negative { u.wrapping_neg() } else { u };
        let mut prec = 0;
        if self.f.prec_present {
            prec = self.f.prec;
            if prec == 0 && u == 0 {
                let old = self.f.zero;
                self.f.zero = false;
                self.write_padding(self.f.wid);
                self.f.zero = old;
                return;
            }
        } else if self.f.zero && self.f.wid_present {
            prec = self.f.wid;
            if negative || self.f.plus || self.f.space {
                prec -= 1;
            }
        }
        let digits: &[u8; 17] = if upper {
            b"0123456789ABCDEFX"
        } else {
            b"0123456789abcdefx"
        };
        // Built right to left.
        let mut buf: Vec<u8> = Vec::new();
        loop {
            buf.push(digits[(u % base) as usize]);
            u /= base;
            if u == 0 {
                break;
            }
        }
        while (buf.len() as i64) < prec {
            buf.push(b'0');
        }
        if self.f.sharp {
            match base {
                2 => buf.extend_from_slice(b"b0"),
                8 if buf.last() != Some(&b'0') => buf.push(b'0'),
                16 => {
                    buf.push(digits[16]);
                    buf.push(b'0');
                }
                _ => {}
            }
        }
        if verb == 'O' {
            buf.extend_from_slice(b"o0");
        }
        if negative {
            buf.push(b'-');
        } else if self.f.plus {
            buf.push(b'+');
        } else if self.f.space {
            buf.push(b' ');
        }
        buf.reverse();
        let s = String::from_utf8(buf).unwrap_or_default();
        let old = self.f.zero;
        self.f.zero = false;
        self.pad(&s);
        self.f.zero = old;
    }

    fn fmt_unicode(&mut self, u: u64) {
        let prec = if self.f.prec_present && self.f.prec > 4 {
            self.f.prec as usize
        } else {
            4
        };
        let mut s = format!("U+{u:0prec$X}");
        if self.f.sharp
            && let Some(c) = u32::try_from(u).ok().and_then(char::from_u32)
            && is_print(c)
        {
            let _ = write!(s, " '{c}'");
        }
        let old = self.f.zero;
        self.f.zero = false;
        self.pad(&s);
        self.f.zero = old;
    }

    fn fmt_float(&mut self, v: f64, verb: char, prec: i64) {
        let prec = if self.f.prec_present {
            self.f.prec
        } else {
            prec
        };
        let fmtc = if verb == 'F' { 'f' } else { verb };
        let mut num = format_float(v, fmtc, prec);
        if !num.starts_with(['-', '+']) {
            num.insert(0, '+');
        }
        if self.f.space && num.starts_with('+') && !self.f.plus {
            num.replace_range(0..1, " ");
        }
        if num[1..].starts_with(['I', 'N']) {
            let old = self.f.zero;
            self.f.zero = false;
            if num[1..].starts_with('N') && !self.f.space && !self.f.plus {
                num.remove(0);
            }
            self.pad(&num);
            self.f.zero = old;
            return;
        }
        // The sharp flag forces a decimal point and keeps trailing zeros.
        if self.f.sharp && verb != 'b' {
            let mut digits = match verb {
                'v' | 'g' | 'G' | 'x' if prec == -1 => 6,
                'v' | 'g' | 'G' | 'x' => prec,
                _ => 0,
            };
            let mut tail = String::new();
            let mut has_point = false;
            let mut saw_nonzero = false;
            let b = num.as_bytes();
            let mut cut = b.len();
            for (i, &c) in b.iter().enumerate().skip(1) {
                match c {
                    b'.' => has_point = true,
                    b'p' | b'P' => {
                        cut = i;
                        break;
                    }
                    b'e' | b'E' if verb != 'x' && verb != 'X' => {
                        cut = i;
                        break;
                    }
                    c => {
                        if c != b'0' {
                            saw_nonzero = true;
                        }
                        if saw_nonzero {
                            digits -= 1;
                        }
                    }
                }
            }
            tail.push_str(&num[cut..]);
            num.truncate(cut);
            if !has_point {
                if num == "+0" || num == "-0" || num == " 0" {
                    digits -= 1;
                }
                num.push('.');
            }
            for _ in 0..digits.max(0) {
                num.push('0');
            }
            num.push_str(&tail);
        }
        if self.f.plus || !num.starts_with('+') {
            if self.f.zero && self.f.wid_present && self.f.wid > num.len() as i64 {
                let sign = num.remove(0);
                self.buf.push(sign);
                self.write_padding(self.f.wid - num.len() as i64 - 1);
                self.buf.push_str(&num);
                return;
            }
            self.pad(&num);
            return;
        }
        self.pad(&num[1..]);
    }
}

fn rune_of(u: u64) -> char {
    u32::try_from(u)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{FFFD}')
}

/// Go's `fmt.Sprint`: spaces between operands when neither is a string.
fn sprint(args: &[Val]) -> String {
    let mut p = Printer::default();
    let mut prev_string = false;
    for (i, a) in args.iter().enumerate() {
        let is_string = matches!(a, Val::Str(_));
        if i > 0 && !is_string && !prev_string {
            p.buf.push(' ');
        }
        p.print_arg(a, 'v');
        prev_string = is_string;
    }
    p.buf
}

/// Go's `fmt.Sprintln`.
fn sprintln(args: &[Val]) -> String {
    let mut p = Printer::default();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            p.buf.push(' ');
        }
        p.print_arg(a, 'v');
    }
    p.buf.push('\n');
    p.buf
}

/// Go's `parsenum`.
fn parsenum(s: &[u8], start: usize, end: usize) -> (i64, bool, usize) {
    if start >= end {
        return (0, false, end);
    }
    let mut num = 0i64;
    let mut isnum = false;
    let mut i = start;
    while i < end && s[i].is_ascii_digit() {
        if num > 1_000_000 {
            return (0, false, end);
        }
        num = num * 10 + (s[i] - b'0') as i64;
        isnum = true;
        i += 1;
    }
    (num, isnum, i)
}

/// Go's `fmt.Sprintf`.
fn sprintf(format: &str, args: &[Val]) -> String {
    struct Idx<'x> {
        b: &'x [u8],
        num_args: usize,
        reordered: bool,
        good_arg_num: bool,
    }
    impl Idx<'_> {
        /// Go's `argNumber`: an optional `[n]` argument index at `i`.
        fn arg_number(&mut self, arg_num: usize, i: usize) -> (usize, usize, bool) {
            if self.b.len() <= i || self.b[i] != b'[' {
                return (arg_num, i, false);
            }
            self.reordered = true;
            let f = &self.b[i..];
            let (index, wid, ok) = 'parse: {
                if f.len() < 3 {
                    break 'parse (0, 1, false);
                }
                for j in 1..f.len() {
                    if f[j] == b']' {
                        let (width, ok, newi) = parsenum(f, 1, j);
                        if !ok || newi != j {
                            break 'parse (0, j + 1, false);
                        }
                        break 'parse (width - 1, j + 1, true);
                    }
                }
                (0, 1, false)
            };
            if ok && index >= 0 && (index as usize) < self.num_args {
                return (index as usize, i + wid, true);
            }
            self.good_arg_num = false;
            (arg_num, i + wid, ok)
        }
    }
    fn int_from_arg(args: &[Val], arg_num: usize) -> (i64, bool, usize) {
        if arg_num >= args.len() {
            return (0, false, arg_num);
        }
        let (mut num, mut is_int) = match &args[arg_num] {
            Val::Int(i) => (*i, true),
            Val::Uint(u) if *u <= i64::MAX as u64 => (*u as i64, true),
            Val::Byte(b) => (*b as i64, true),
            _ => (0, false),
        };
        if !(-1_000_000..=1_000_000).contains(&num) {
            num = 0;
            is_int = false;
        }
        (num, is_int, arg_num + 1)
    }

    let b = format.as_bytes();
    let end = b.len();
    let mut p = Printer::default();
    let mut ix = Idx {
        b,
        num_args: args.len(),
        reordered: false,
        good_arg_num: true,
    };
    let mut arg_num = 0usize;
    let mut i = 0usize;
    'format: while i < end {
        ix.good_arg_num = true;
        let lasti = i;
        while i < end && b[i] != b'%' {
            i += 1;
        }
        if i > lasti {
            p.buf.push_str(&format[lasti..i]);
        }
        if i >= end {
            break;
        }
        i += 1;
        p.f = Flags::default();
        while i < end {
            let c = b[i];
            match c {
                b'#' => p.f.sharp = true,
                b'0' => p.f.zero = !p.f.minus,
                b'+' => p.f.plus = true,
                b'-' => {
                    p.f.minus = true;
                    p.f.zero = false;
                }
                b' ' => p.f.space = true,
                _ => {
                    // Fast path: a simple lower-case verb.
                    if c.is_ascii_lowercase() && arg_num < args.len() {
                        if c == b'v' {
                            p.f.sharp_v = p.f.sharp;
                            p.f.sharp = false;
                            p.f.plus = false;
                        }
                        p.print_arg(&args[arg_num], c as char);
                        arg_num += 1;
                        i += 1;
                        continue 'format;
                    }
                    break;
                }
            }
            i += 1;
        }

        let mut after_index;
        (arg_num, i, after_index) = ix.arg_number(arg_num, i);

        // Width.
        if i < end && b[i] == b'*' {
            i += 1;
            let (w, ok, n) = int_from_arg(args, arg_num);
            (p.f.wid, p.f.wid_present, arg_num) = (w, ok, n);
            if !ok {
                p.buf.push_str("%!(BADWIDTH)");
            }
            if p.f.wid < 0 {
                p.f.wid = -p.f.wid;
                p.f.minus = true;
                p.f.zero = false;
            }
            after_index = false;
        } else {
            (p.f.wid, p.f.wid_present, i) = parsenum(b, i, end);
            if after_index && p.f.wid_present {
                ix.good_arg_num = false;
            }
        }

        // Precision.
        if i + 1 < end && b[i] == b'.' {
            i += 1;
            if after_index {
                ix.good_arg_num = false;
            }
            (arg_num, i, after_index) = ix.arg_number(arg_num, i);
            if i < end && b[i] == b'*' {
                i += 1;
                (p.f.prec, p.f.prec_present, arg_num) = int_from_arg(args, arg_num);
                if p.f.prec < 0 {
                    p.f.prec = 0;
                    p.f.prec_present = false;
                }
                if !p.f.prec_present {
                    p.buf.push_str("%!(BADPREC)");
                }
                after_index = false;
            } else {
                (p.f.prec, p.f.prec_present, i) = parsenum(b, i, end);
                if !p.f.prec_present {
                    p.f.prec = 0;
                    p.f.prec_present = true;
                }
            }
        }

        if !after_index {
            (arg_num, i, _) = ix.arg_number(arg_num, i);
        }

        if i >= end {
            p.buf.push_str("%!(NOVERB)");
            break;
        }
        let verb = format[i..].chars().next().unwrap_or('?');
        i += verb.len_utf8();

        if verb == '%' {
            p.buf.push('%');
        } else if !ix.good_arg_num {
            let _ = write!(p.buf, "%!{verb}(BADINDEX)");
        } else if arg_num >= args.len() {
            let _ = write!(p.buf, "%!{verb}(MISSING)");
        } else {
            if verb == 'v' {
                p.f.sharp_v = p.f.sharp;
                p.f.sharp = false;
                p.f.plus = false;
            }
            p.print_arg(&args[arg_num], verb);
            arg_num += 1;
        }
    }

    if !ix.reordered && arg_num < args.len() {
        p.f = Flags::default();
        p.buf.push_str("%!(EXTRA ");
        for (k, arg) in args[arg_num..].iter().enumerate() {
            if k > 0 {
                p.buf.push_str(", ");
            }
            if is_nilish(arg) {
                p.buf.push_str("<nil>");
            } else {
                p.buf.push_str(&type_name(arg));
                p.buf.push('=');
                p.print_arg(arg, 'v');
            }
        }
        p.buf.push(')');
    }
    p.buf
}

// ---------------------------------------------------------------------------
// Execution (a port of text/template/exec.go)
// ---------------------------------------------------------------------------

/// The node an execution error is reported at.
#[derive(Clone, Copy)]
enum At<'a> {
    None,
    Expr(&'a Expr),
    Cmd(&'a Cmd),
    Pipe(&'a Pipe),
    Call(&'a TemplateCall),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

type R<T> = Result<T, TemplateError>;

struct State<'a, 'o> {
    t: &'a Template,
    tmpl_name: &'a str,
    vars: Vec<(&'a str, Val<'a>)>,
    at: At<'a>,
    out: &'o mut String,
    depth: usize,
}

impl<'a> State<'a, '_> {
    fn errorf(&self, msg: impl fmt::Display) -> TemplateError {
        let (pos, ctx) = match self.at {
            At::None => {
                return TemplateError(format!("template: {}: {msg}", self.tmpl_name));
            }
            At::Expr(e) => (e.pos(), e.to_string()),
            At::Cmd(c) => (c.pos, c.to_string()),
            At::Pipe(p) => (p.pos, p.to_string()),
            At::Call(c) => (c.pos, c.to_string()),
        };
        let (line, col) = self.t.line_col(pos);
        TemplateError(format!(
            "template: {}:{line}:{col}: executing {} at <{ctx}>: {msg}",
            self.t.name,
            go_quote(self.tmpl_name)
        ))
    }

    fn walk(&mut self, dot: &Val<'a>, nodes: &'a [Node]) -> R<Flow> {
        for node in nodes {
            let flow = match node {
                Node::Text(t) => {
                    self.out.push_str(t);
                    Flow::Normal
                }
                Node::Action(pipe) => {
                    let v = self.eval_pipeline(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        self.print_value(&v);
                    }
                    Flow::Normal
                }
                Node::If(b) => self.walk_if_with(false, dot, b)?,
                Node::With(b) => self.walk_if_with(true, dot, b)?,
                Node::Range(b) => self.walk_range(dot, b)?,
                Node::Template(call) => {
                    self.walk_template(dot, call)?;
                    Flow::Normal
                }
                Node::Break => Flow::Break,
                Node::Continue => Flow::Continue,
            };
            if flow != Flow::Normal {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn print_value(&mut self, v: &Val) {
        if matches!(v, Val::Missing) {
            self.out.push_str("<no value>");
        } else {
            let mut p = Printer::default();
            p.print_arg(v, 'v');
            self.out.push_str(&p.buf);
        }
    }

    fn walk_if_with(&mut self, with: bool, dot: &Val<'a>, b: &'a Branch) -> R<Flow> {
        let mark = self.vars.len();
        let val = self.eval_pipeline(dot, &b.pipe)?;
        let flow = if truth(&val) {
            if with {
                self.walk(&val, &b.list)?
            } else {
                self.walk(dot, &b.list)?
            }
        } else if let Some(else_list) = &b.else_list {
            self.walk(dot, else_list)?
        } else {
            Flow::Normal
        };
        self.vars.truncate(mark);
        Ok(flow)
    }

    fn walk_range(&mut self, dot: &Val<'a>, b: &'a Branch) -> R<Flow> {
        let mark = self.vars.len();
        let val = self.eval_pipeline(dot, &b.pipe)?;
        let body_mark = self.vars.len();
        let mut ran = false;
        let mut iterate = |this: &mut Self, index: Val<'a>, elem: Val<'a>| -> R<Flow> {
            ran = true;
            let decl = &b.pipe.decl;
            if b.pipe.is_assign {
                if decl.len() > 1 {
                    this.set_var(&decl[0], index)?;
                    this.set_var(&decl[1], elem.clone())?;
                } else if let Some(d) = decl.first() {
                    this.set_var(d, elem.clone())?;
                }
            } else {
                if !decl.is_empty() {
                    this.vars[body_mark - 1].1 = elem.clone();
                }
                if decl.len() > 1 {
                    this.vars[body_mark - 2].1 = index;
                }
            }
            let flow = this.walk(&elem, &b.list)?;
            this.vars.truncate(body_mark);
            Ok(flow)
        };
        match &val {
            Val::Arr(list) => {
                for i in 0..list.len() {
                    if iterate(self, Val::Int(i as i64), list.get(i))? == Flow::Break {
                        break;
                    }
                }
            }
            Val::Obj(m) => {
                for (k, v) in sorted_entries(m) {
                    let key = Val::Str(Cow::Borrowed(k.as_str()));
                    if iterate(self, key, from_json(v))? == Flow::Break {
                        break;
                    }
                }
            }
            Val::Int(_) | Val::Uint(_) | Val::Byte(_) => {
                if b.pipe.decl.len() > 1 {
                    return Err(self.errorf(format!(
                        "can't use {} to iterate over more than one variable",
                        sprint(std::slice::from_ref(&val))
                    )));
                }
                let n = match val {
                    Val::Int(i) => i.max(0) as u64,
                    ref other => as_u64(other),
                };
                for i in 0..n {
                    let v = Val::Int(i as i64);
                    if iterate(self, v.clone(), v)? == Flow::Break {
                        break;
                    }
                }
            }
            Val::Missing | Val::Nil => {}
            other => {
                return Err(self.errorf(format!(
                    "range can't iterate over {}",
                    sprint(std::slice::from_ref(other))
                )));
            }
        }
        let flow = match (&b.else_list, ran) {
            (Some(else_list), false) => self.walk(dot, else_list)?,
            _ => Flow::Normal,
        };
        self.vars.truncate(mark);
        Ok(flow)
    }

    fn walk_template(&mut self, dot: &Val<'a>, call: &'a TemplateCall) -> R<()> {
        self.at = At::Call(call);
        let Some(tree) = self.t.trees.get(&call.name) else {
            return Err(self.errorf(format!("template {} not defined", go_quote(&call.name))));
        };
        if self.depth >= MAX_EXEC_DEPTH {
            return Err(self.errorf(format!(
                "exceeded maximum template depth ({MAX_EXEC_DEPTH})"
            )));
        }
        let new_dot = match &call.pipe {
            Some(p) => self.eval_pipeline(dot, p)?,
            None => Val::Missing,
        };
        let vars = std::mem::replace(&mut self.vars, vec![("$", new_dot.clone())]);
        let name = std::mem::replace(&mut self.tmpl_name, call.name.as_str());
        self.depth += 1;
        let result = self.walk(&new_dot, tree);
        self.depth -= 1;
        self.tmpl_name = name;
        self.vars = vars;
        result.map(|_| ())
    }

    fn var_value(&self, name: &str) -> R<Val<'a>> {
        match self.vars.iter().rev().find(|(n, _)| *n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => Err(self.errorf(format!("undefined variable: {name}"))),
        }
    }

    fn set_var(&mut self, name: &str, v: Val<'a>) -> R<()> {
        match self.vars.iter_mut().rev().find(|(n, _)| *n == name) {
            Some(slot) => {
                slot.1 = v;
                Ok(())
            }
            None => Err(self.errorf(format!("undefined variable: {name}"))),
        }
    }

    fn eval_pipeline(&mut self, dot: &Val<'a>, pipe: &'a Pipe) -> R<Val<'a>> {
        self.at = At::Pipe(pipe);
        let mut value: Option<Val<'a>> = None;
        for cmd in &pipe.cmds {
            value = Some(self.eval_command(dot, cmd, value)?);
        }
        let value = value.unwrap_or(Val::Missing);
        for d in &pipe.decl {
            if pipe.is_assign {
                self.set_var(d, value.clone())?;
            } else {
                self.vars.push((d.as_str(), value.clone()));
            }
        }
        Ok(value)
    }

    fn not_a_function(&self, args: &[Expr], fin: &Option<Val<'a>>) -> R<()> {
        if args.len() > 1 || fin.is_some() {
            return Err(self.errorf(format!("can't give argument to non-function {}", args[0])));
        }
        Ok(())
    }

    fn eval_command(&mut self, dot: &Val<'a>, cmd: &'a Cmd, fin: Option<Val<'a>>) -> R<Val<'a>> {
        let first = &cmd.args[0];
        match first {
            Expr::Field { idents, .. } => {
                self.at = At::Expr(first);
                return self.eval_field_chain(dot.clone(), idents, &cmd.args, fin);
            }
            Expr::Chain { .. } => return self.eval_chain(dot, first, &cmd.args, fin),
            Expr::Ident { name, .. } => {
                return self.eval_function(dot, first, name, At::Cmd(cmd), &cmd.args[1..], fin);
            }
            Expr::Pipe(p) => {
                self.not_a_function(&cmd.args, &fin)?;
                return self.eval_pipeline(dot, p);
            }
            Expr::Variable { .. } => return self.eval_variable(dot, first, &cmd.args, fin),
            _ => {}
        }
        self.at = At::Expr(first);
        self.not_a_function(&cmd.args, &fin)?;
        match first {
            Expr::Bool { val, .. } => Ok(Val::Bool(*val)),
            Expr::Dot { .. } => Ok(dot.clone()),
            Expr::Nil { .. } => Err(self.errorf("nil is not a command")),
            Expr::Number { num, .. } => self.ideal_constant(num),
            Expr::Str { val, .. } => Ok(Val::Str(Cow::Borrowed(val))),
            other => Err(self.errorf(format!(
                "can't evaluate command {}",
                go_quote(&other.to_string())
            ))),
        }
    }

    fn ideal_constant(&self, n: &Num) -> R<Val<'a>> {
        if n.is_float
            && !is_hex_int(&n.text)
            && !n.is_char
            && n.text.contains(['.', 'e', 'E', 'p', 'P'])
        {
            return Ok(Val::Float(n.f));
        }
        if n.is_int {
            return Ok(Val::Int(n.i));
        }
        if n.is_uint {
            return Err(self.errorf(format!("{} overflows int", n.text)));
        }
        Ok(Val::Missing)
    }

    fn eval_field_chain(
        &mut self,
        mut recv: Val<'a>,
        idents: &'a [String],
        args: &'a [Expr],
        fin: Option<Val<'a>>,
    ) -> R<Val<'a>> {
        let (last, init) = idents.split_last().expect("fields are never empty");
        for id in init {
            recv = self.eval_field(id, recv, false)?;
        }
        self.eval_field(last, recv, args.len() > 1 || fin.is_some())
    }

    fn eval_field(&self, name: &str, recv: Val<'a>, has_args: bool) -> R<Val<'a>> {
        match recv {
            Val::Missing => Ok(Val::Missing),
            Val::Obj(m) => {
                if has_args {
                    return Err(self.errorf(if m.contains_key(name) {
                        format!("{name} has arguments but cannot be invoked as function")
                    } else {
                        format!("{name} is not a method but has arguments")
                    }));
                }
                Ok(m.get(name).map_or(Val::Missing, from_json))
            }
            Val::Nil => Err(self.errorf(format!("nil pointer evaluating interface {{}}.{name}"))),
            other => Err(self.errorf(format!(
                "can't evaluate field {name} in type {}",
                type_name(&other)
            ))),
        }
    }

    fn eval_variable(
        &mut self,
        _dot: &Val<'a>,
        node: &'a Expr,
        args: &'a [Expr],
        fin: Option<Val<'a>>,
    ) -> R<Val<'a>> {
        let Expr::Variable { name, fields, .. } = node else {
            unreachable!("eval_variable on a non-variable");
        };
        self.at = At::Expr(node);
        let value = self.var_value(name)?;
        if fields.is_empty() {
            self.not_a_function(args, &fin)?;
            return Ok(value);
        }
        self.eval_field_chain(value, fields, args, fin)
    }

    fn eval_chain(
        &mut self,
        dot: &Val<'a>,
        node: &'a Expr,
        args: &'a [Expr],
        fin: Option<Val<'a>>,
    ) -> R<Val<'a>> {
        let Expr::Chain {
            node: inner,
            fields,
            ..
        } = node
        else {
            unreachable!("eval_chain on a non-chain");
        };
        self.at = At::Expr(node);
        if matches!(**inner, Expr::Nil { .. }) {
            return Err(self.errorf(format!("indirection through explicit nil in {node}")));
        }
        let recv = self.eval_arg(dot, P::Value, inner)?;
        self.eval_field_chain(recv, fields, args, fin)
    }

    #[allow(clippy::too_many_arguments)]
    fn eval_function(
        &mut self,
        dot: &Val<'a>,
        ident: &'a Expr,
        name: &str,
        call_at: At<'a>,
        args: &'a [Expr],
        fin: Option<Val<'a>>,
    ) -> R<Val<'a>> {
        self.at = At::Expr(ident);
        let Some(sig) = func_sig(name) else {
            return Err(self.errorf(format!("{} is not a defined function", go_quote(name))));
        };
        let num_in = args.len() + usize::from(fin.is_some());
        let num_fixed = sig.params.len();
        if sig.variadic.is_some() {
            if num_in < num_fixed {
                return Err(self.errorf(format!(
                    "wrong number of args for {name}: want at least {num_fixed} got {}",
                    args.len()
                )));
            }
        } else if num_in != num_fixed {
            return Err(self.errorf(format!(
                "wrong number of args for {name}: want {num_fixed} got {num_in}"
            )));
        }
        let param = |i: usize| {
            if i < num_fixed {
                sig.params[i]
            } else {
                sig.variadic.unwrap_or(P::Any)
            }
        };

        // and/or short-circuit and return the deciding argument.
        if name == "and" || name == "or" {
            let want = name == "or";
            let mut v = Val::Missing;
            for a in args {
                v = self.eval_arg(dot, P::Value, a)?;
                if truth(&v) == want {
                    return Ok(v);
                }
            }
            if let Some(f) = fin {
                v = f;
            }
            return Ok(v);
        }

        let mut argv = Vec::with_capacity(num_in);
        for (i, a) in args.iter().enumerate() {
            argv.push(self.eval_arg(dot, param(i), a)?);
        }
        if let Some(f) = fin {
            argv.push(self.validate_type(f, param(num_in - 1))?);
        }
        call_func(name, argv).map_err(|msg| {
            self.at = call_at;
            self.errorf(format!("error calling {name}: {msg}"))
        })
    }

    fn validate_type(&self, v: Val<'a>, p: P) -> R<Val<'a>> {
        let bad = |this: &Self, v: &Val| {
            if matches!(v, Val::Missing) {
                this.errorf(format!("invalid value; expected {}", p.go_name()))
            } else {
                this.errorf(format!(
                    "wrong type for value; expected {}; got {}",
                    p.go_name(),
                    type_name(v)
                ))
            }
        };
        match p {
            P::Value => Ok(v),
            P::Any => Ok(if matches!(v, Val::Missing) {
                Val::Nil
            } else {
                v
            }),
            P::Str => match v {
                Val::Str(_) => Ok(v),
                other => Err(bad(self, &other)),
            },
            P::Int => match v {
                Val::Int(_) => Ok(v),
                Val::Uint(u) if u <= i64::MAX as u64 => Ok(Val::Int(u as i64)),
                other => Err(bad(self, &other)),
            },
            P::StrSlice => match v {
                Val::Arr(ref l) if l.all_strings() => Ok(v),
                Val::Missing => Ok(Val::Arr(List::Json(&[]))),
                other => Err(bad(self, &other)),
            },
        }
    }

    fn eval_arg(&mut self, dot: &Val<'a>, p: P, node: &'a Expr) -> R<Val<'a>> {
        self.at = At::Expr(node);
        let v = match node {
            Expr::Dot { .. } => dot.clone(),
            Expr::Nil { .. } => {
                return match p {
                    P::Any => Ok(Val::Nil),
                    P::Value => Ok(Val::Missing),
                    P::StrSlice => Ok(Val::Arr(List::Json(&[]))),
                    P::Str | P::Int => {
                        Err(self.errorf(format!("cannot assign nil to {}", p.go_name())))
                    }
                };
            }
            Expr::Field { idents, .. } => {
                self.eval_field_chain(dot.clone(), idents, std::slice::from_ref(node), None)?
            }
            Expr::Variable { .. } => self.eval_variable(dot, node, &[], None)?,
            Expr::Pipe(pipe) => self.eval_pipeline(dot, pipe)?,
            Expr::Ident { name, .. } => {
                self.eval_function(dot, node, name, At::Expr(node), &[], None)?
            }
            Expr::Chain { .. } => self.eval_chain(dot, node, &[], None)?,
            Expr::Bool { val, .. } => {
                return match p {
                    P::Any | P::Value => Ok(Val::Bool(*val)),
                    _ => Err(self.literal_mismatch(p, node)),
                };
            }
            Expr::Number { num, .. } => {
                return match p {
                    P::Any | P::Value => self.ideal_constant(num),
                    P::Int if num.is_int => Ok(Val::Int(num.i)),
                    _ => Err(self.literal_mismatch(p, node)),
                };
            }
            Expr::Str { val, .. } => {
                return match p {
                    P::Any | P::Value | P::Str => Ok(Val::Str(Cow::Borrowed(val))),
                    _ => Err(self.literal_mismatch(p, node)),
                };
            }
        };
        self.validate_type(v, p)
    }

    fn literal_mismatch(&self, p: P, node: &Expr) -> TemplateError {
        match p {
            P::Str => self.errorf(format!("expected string; found {node}")),
            P::Int => self.errorf(format!("expected integer; found {node}")),
            _ => self.errorf(format!(
                "can't handle {node} for arg of type {}",
                p.go_name()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data() -> Value {
        json!({
            "ID": "3f2a9c1b7d8e",
            "Repository": "docker.io/library/alpine",
            "Tag": "latest",
            "Size": 7_800_000,
            "Big": 18_446_744_073_709_551_615u64,
            "Neg": -5,
            "Ratio": 0.25,
            "Million": 1_000_000.0,
            "Up": true,
            "Down": false,
            "Nothing": null,
            "Empty": "",
            "Names": ["web", "db"],
            "NoNames": [],
            "Labels": {"b": "2", "a": "1"},
            "NoLabels": {},
            "Mixed": [1, "x", null, true, 1.5],
            "Host": {"Arch": "amd64", "CPUs": 4, "OS": {"Name": "linux"}},
            "Ports": [{"Host": 8080, "Container": 80}, {"Host": 8443, "Container": 443}],
        })
    }

    fn run(src: &str) -> String {
        run_with(src, &data())
    }

    fn run_with(src: &str, data: &Value) -> String {
        let t = Template::parse(src).unwrap_or_else(|e| panic!("parse {src:?}: {e}"));
        t.execute(data)
            .unwrap_or_else(|e| panic!("execute {src:?}: {e}"))
    }

    fn err(src: &str) -> String {
        match Template::parse(src) {
            Err(e) => e.to_string(),
            Ok(t) => match t.execute(&data()) {
                Err(e) => e.to_string(),
                Ok(out) => panic!("expected an error for {src:?}, got {out:?}"),
            },
        }
    }

    #[test]
    fn literal_text_and_fields() {
        assert_eq!(run("plain text"), "plain text");
        assert_eq!(run(""), "");
        assert_eq!(
            run("{{.Repository}}:{{.Tag}}"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(run("{{.Host.OS.Name}}"), "linux");
        assert_eq!(run("{{ .Host.Arch }}"), "amd64");
        assert_eq!(run("{{$.Tag}}"), "latest");
        assert!(
            run("{{$}}")
                .starts_with("map[Big:18446744073709551615 Down:false Empty: Host:map[Arch:amd64 ")
        );
    }

    #[test]
    fn value_printing_like_go() {
        assert_eq!(
            run("{{.Size}}|{{.Big}}|{{.Neg}}|{{.Ratio}}|{{.Million}}"),
            "7800000|18446744073709551615|-5|0.25|1e+06"
        );
        assert_eq!(run("{{.Up}} {{.Down}}"), "true false");
        assert_eq!(run("{{.Names}}|{{.NoNames}}"), "[web db]|[]");
        assert_eq!(run("{{.Labels}}|{{.NoLabels}}"), "map[a:1 b:2]|map[]");
        assert_eq!(run("{{.Mixed}}"), "[1 x <nil> true 1.5]");
        assert_eq!(
            run("{{.Ports}}"),
            "[map[Container:80 Host:8080] map[Container:443 Host:8443]]"
        );
        assert_eq!(run("{{.Nothing}}"), "<nil>");
        assert_eq!(
            run("{{.Missing}}|{{.Host.Missing}}|{{.Missing.Deeper}}"),
            "<no value>|<no value>|<no value>"
        );
        assert_eq!(run_with("{{.}}", &json!("s")), "s");
        assert_eq!(run_with("{{.}}", &json!(null)), "<nil>");
    }

    #[test]
    fn literals() {
        // Verified against podman 4.3.1 (Go 1.19).
        assert_eq!(
            run(
                r#"{{"a\tb\x41\u00e9"}} {{`raw\n`}} {{'a'}} {{0x1F}} {{-3}} {{1_000}} {{0o17}} {{017}}"#
            ),
            "a\tbAé raw\\n 97 31 -3 1000 15 15"
        );
        assert_eq!(
            run(
                "{{1000000.0}} {{1e6}} {{123456.0}} {{1234567.0}} {{0.0001}} {{0.00001}} {{1e21}} {{1.5}}"
            ),
            "1e+06 1e+06 123456 1.234567e+06 0.0001 1e-05 1e+21 1.5"
        );
        assert_eq!(
            run("{{true}} {{false}} {{1.0}} {{.5}} {{+2}}"),
            "true false 1 0.5 2"
        );
        assert_eq!(run("{{\"\\\"quoted\\\"\"}}"), "\"quoted\"");
    }

    #[test]
    fn trim_markers_and_comments() {
        assert_eq!(run("{{- \" a \" -}}  x  {{- \" b \" }}"), " a x b ");
        assert_eq!(run("{{/* c */}}A{{- /* c2 */ -}} B"), "AB");
        assert_eq!(run("a  \n {{- .Tag -}} \n\t b"), "alatestb");
        assert_eq!(run("{{-3}}"), "-3");
        assert_eq!(run("x {{- 3 }}"), "x3");
    }

    #[test]
    fn variables() {
        assert_eq!(
            run("{{$x := .Host}}{{$x.Arch}}/{{$x.OS.Name}}"),
            "amd64/linux"
        );
        assert_eq!(run("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}"), "2");
        assert_eq!(
            run("{{$x := 1}}{{if true}}{{$x := 2}}{{$x}}{{end}}{{$x}}"),
            "21"
        );
        assert_eq!(
            run("{{with .Host}}{{$.Tag}} {{.Arch}}{{end}}"),
            "latest amd64"
        );
        assert_eq!(run("{{$n := len .Names}}{{$n}}"), "2");
    }

    #[test]
    fn pipelines_and_parens() {
        assert_eq!(run("{{.Tag | upper}}"), "LATEST");
        assert_eq!(run("{{.Host.Arch | printf \"%s-%s\" \"a\"}}"), "a-amd64");
        assert_eq!(run("{{.Repository | split \"/\" | len}}"), "1");
        assert_eq!(run("{{split .Repository \"/\" | len}}"), "3");
        assert_eq!(run("{{(index .Ports 1).Host}} {{(len .Names)}}"), "8443 2");
        assert_eq!(
            run("{{printf \"%d\" (len (split .Repository \"/\"))}}"),
            "3"
        );
        assert_eq!(run("{{.Tag |}}"), "latest");
    }

    #[test]
    fn if_else() {
        assert_eq!(run("{{if .Up}}up{{else}}down{{end}}"), "up");
        assert_eq!(run("{{if .Down}}up{{else}}down{{end}}"), "down");
        assert_eq!(run("{{if .Down}}a{{else if .Up}}b{{else}}c{{end}}"), "b");
        assert_eq!(
            run("{{if 0}}a{{else if \"\"}}b{{else if .Missing}}c{{else}}d{{end}}"),
            "d"
        );
        assert_eq!(
            run(
                "{{if .NoNames}}1{{end}}{{if .NoLabels}}2{{end}}{{if .Nothing}}3{{end}}{{if .Empty}}4{{end}}{{if .Names}}5{{end}}{{if .Labels}}6{{end}}"
            ),
            "56"
        );
        assert_eq!(run("{{if and .Up (eq .Tag \"latest\")}}yes{{end}}"), "yes");
    }

    #[test]
    fn with_blocks() {
        assert_eq!(run("{{with .Host.OS}}{{.Name}}{{end}}"), "linux");
        assert_eq!(run("{{with .Missing}}x{{else}}none{{end}}"), "none");
        assert_eq!(run("{{with $a := .Tag}}{{$a}}{{.}}{{end}}"), "latestlatest");
        assert_eq!(run("{{with 0}}a{{else with 2}}{{.}}{{end}}"), "2");
    }

    #[test]
    fn range_over_arrays_and_objects() {
        assert_eq!(run("{{range .Names}}[{{.}}]{{end}}"), "[web][db]");
        assert_eq!(
            run("{{range $i, $e := .Names}}{{$i}}={{$e}} {{end}}"),
            "0=web 1=db "
        );
        assert_eq!(run("{{range $e := .Names}}{{$e}},{{end}}"), "web,db,");
        assert_eq!(
            run("{{range $k, $v := .Labels}}{{$k}}:{{$v}};{{end}}"),
            "a:1;b:2;"
        );
        assert_eq!(run("{{range .Labels}}{{.}}{{end}}"), "12");
        assert_eq!(
            run("{{range .Ports}}{{.Host}}->{{.Container}} {{end}}"),
            "8080->80 8443->443 "
        );
        assert_eq!(run("{{range .NoNames}}x{{else}}empty{{end}}"), "empty");
        assert_eq!(
            run("{{range .Missing}}x{{else}}none{{end}}|{{range .Nothing}}x{{end}}"),
            "none|"
        );
        assert_eq!(run("{{range 3}}{{.}}{{end}}"), "012");
        assert_eq!(
            run(
                "{{range .Names}}{{if eq . \"db\"}}{{break}}{{end}}{{.}}{{end}}|{{range .Names}}{{if eq . \"web\"}}{{continue}}{{end}}{{.}}{{end}}"
            ),
            "web|db"
        );
        assert_eq!(
            run("{{range $i, $p := .Ports}}{{$i}}:{{$p.Host}}{{if $i}}!{{end}} {{end}}"),
            "0:8080 1:8443! "
        );
    }

    #[test]
    fn define_template_block() {
        assert_eq!(
            run("{{define \"x\"}}<{{.}}>{{end}}{{template \"x\" .Tag}}{{template \"x\"}}"),
            "<latest><<no value>>"
        );
        assert_eq!(run("{{block \"b\" .Host}}{{.Arch}}{{end}}"), "amd64");
        assert_eq!(
            err("{{template \"nope\"}}"),
            "template: format:1:11: executing \"format\" at <{{template \"nope\"}}>: template \"nope\" not defined"
        );
    }

    #[test]
    fn comparison_functions() {
        // Verified against podman 4.3.1.
        assert_eq!(
            run(
                "{{eq 1 1}} {{eq 1 2 1}} {{eq \"a\" \"a\"}} {{ne 1 2}} {{lt 1 2}} {{le 2 2}} {{gt \"b\" \"a\"}} {{ge 1.5 1.5}}"
            ),
            "true true true true true true true true"
        );
        assert_eq!(
            run("{{eq .Host.CPUs 4}} {{eq .Size 2}} {{lt .Neg 0}} {{gt .Big 1}} {{eq .Big 1}}"),
            "true false true true false"
        );
        assert_eq!(
            run("{{eq .Missing \"x\"}} {{eq nil 1}} {{eq .Tag \"latest\"}}"),
            "false false true"
        );
        assert_eq!(
            err("{{eq 1 \"a\"}}"),
            "template: format:1:2: executing \"format\" at <eq 1 \"a\">: error calling eq: incompatible types for comparison"
        );
        assert_eq!(
            err("{{lt true false}}"),
            "template: format:1:2: executing \"format\" at <lt true false>: error calling lt: invalid type for comparison"
        );
        assert_eq!(
            err("{{ge 1.5 1}}"),
            "template: format:1:2: executing \"format\" at <ge 1.5 1>: error calling ge: incompatible types for comparison"
        );
        assert_eq!(
            err("{{eq .Names .Names}}"),
            "template: format:1:2: executing \"format\" at <eq .Names .Names>: error calling eq: non-comparable type [web db]: []string"
        );
        assert_eq!(
            err("{{eq 1}}"),
            "template: format:1:2: executing \"format\" at <eq 1>: error calling eq: missing argument for comparison"
        );
    }

    #[test]
    fn logic_functions() {
        assert_eq!(
            run(
                "{{and 1 0 2}} {{and 1 2}} {{or 0 \"\" \"x\"}} {{or 0 \"\"}} {{not 0}} {{not \"a\"}}"
            ),
            "0 2 x  true false"
        );
        assert_eq!(
            run("{{and .Missing 1}}|{{or .Missing .Tag}}"),
            "<no value>|latest"
        );
        // Short-circuit: the failing call is never evaluated.
        assert_eq!(
            run("{{or 1 (index .Names 9)}} {{and 0 (index .Names 9)}}"),
            "1 0"
        );
        assert_eq!(run("{{.Up | and 1}}"), "true");
    }

    #[test]
    fn len_index_slice() {
        assert_eq!(
            run("{{len .Names}} {{len .Labels}} {{len .Tag}} {{len \"héllo\"}}"),
            "2 2 6 6"
        );
        assert_eq!(
            run("{{index .Names 1}} {{index .Labels \"a\"}} {{index .Ports 0 \"Host\"}}"),
            "db 1 8080"
        );
        assert_eq!(
            run("{{index .Labels \"nope\"}}|{{index .Host \"nope\"}}"),
            "|<no value>"
        );
        assert_eq!(run("{{index \"abc\" 1}}"), "98");
        assert_eq!(
            run(
                "{{slice \"abcdef\" 1 3}} {{slice .Names 1}} {{slice \"abc\"}} {{slice .Names 0 1 2}}"
            ),
            "bc [db] abc [web]"
        );
        assert_eq!(
            err("{{index .Names 5}}"),
            "template: format:1:2: executing \"format\" at <index .Names 5>: error calling index: index out of range: 5"
        );
        assert_eq!(
            err("{{index .Names 2}}"),
            "template: format:1:2: executing \"format\" at <index .Names 2>: error calling index: reflect: slice index out of range"
        );
        assert_eq!(
            err("{{index .Labels 1}}"),
            "template: format:1:2: executing \"format\" at <index .Labels 1>: error calling index: value has type int; should be string"
        );
        assert_eq!(
            err("{{index 3 1}}"),
            "template: format:1:2: executing \"format\" at <index 3 1>: error calling index: can't index item of type int"
        );
        assert_eq!(
            err("{{slice \"abc\" 2 1}}"),
            "template: format:1:2: executing \"format\" at <slice \"abc\" 2 1>: error calling slice: invalid slice index: 2 > 1"
        );
        assert_eq!(
            err("{{slice \"abc\" 1 2 3}}"),
            "template: format:1:2: executing \"format\" at <slice \"abc\" 1 2 3>: error calling slice: cannot 3-index slice a string"
        );
        assert_eq!(
            err("{{len 3}}"),
            "template: format:1:2: executing \"format\" at <len 3>: error calling len: len of type int"
        );
        assert_eq!(
            err("{{len .Missing}}"),
            "template: format:1:2: executing \"format\" at <len .Missing>: error calling len: reflect: call of reflect.Value.Type on zero Value"
        );
    }

    #[test]
    fn print_functions() {
        assert_eq!(run("{{print 1 2 \"a\" 3 \"b\" \"c\"}}"), "1 2a3bc");
        assert_eq!(run("{{println 1 \"a\"}}"), "1 a\n");
        assert_eq!(
            run("{{print nil}}|{{print nil 1 nil}}|{{print .Missing}}"),
            "<nil>|<nil> 1 <nil>|<nil>"
        );
        assert_eq!(
            run("{{printf \"%v\" .Missing}}|{{.Missing | printf \"%v\"}}"),
            "<nil>|<nil>"
        );
        assert_eq!(
            run("{{html \"<a href='x'>&</a>\"}}"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(run("{{js \"it's <b>\"}}"), "it\\'s \\u003Cb\\u003E");
        assert_eq!(run("{{urlquery \"a b&c=d/é\"}}"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(run("{{html .Missing}}"), "&lt;no value&gt;");
    }

    #[test]
    fn printf_verbs() {
        // All expectations below were produced by podman 4.3.1 (Go 1.19).
        assert_eq!(
            run("{{printf \"%5d|%-10s|%q|%x|%v\" 42 \"ab\" \"a\\\"b\" 255 1.5}}"),
            "   42|ab        |\"a\\\"b\"|ff|1.5"
        );
        assert_eq!(
            run(
                "{{printf \"%05s|%-5d|%+d|%x|%X|%o|%b|%c|%U|%e|%g|%.2f|%8.3f|%t\" \"ab\" 3 3 -255 255 8 5 65 65 1234.5 0.00001 3.14159 2.5 true}}"
            ),
            "000ab|3    |+3|-ff|FF|10|101|A|U+0041|1.234500e+03|1e-05|3.14|   2.500|true"
        );
        assert_eq!(
            run(
                "{{printf \"%5.1f|%-8q|%x|%X|% x|%#x|%08.3f|%+.2e|%U|%#U|%c|%q\" 3.14159 \"ab\" \"hi\" \"hi\" \"hi\" 255 -3.14159 12345.678 9731 9731 9731 9731}}"
            ),
            "  3.1|\"ab\"    |6869|6869|68 69|0xff|-003.142|+1.23e+04|U+2603|U+2603 '☃'|☃|'☃'"
        );
        assert_eq!(
            run(
                "{{printf \"%6.2s|%-6s|%06d|%-06d|%+06d|% d|%x|%o|%#o|%b|%.3d|%.0d|%5.0d|\" \"abcdef\" \"ab\" 42 42 42 42 -42 8 8 5 7 0 0}}"
            ),
            "    ab|ab    |000042|42    |+00042| 42|-2a|10|010|101|007||     |"
        );
        assert_eq!(
            run(
                "{{printf \"%g|%G|%e|%.3g|%.3g|%g|%g|%v|%v|%.1f|%.0f|%.0f\" 1e-7 1e-7 0.0 123456.0 0.000123456 100000.0 1000000.0 -0.0 1e20 0.25 0.5 1.5}}"
            ),
            "1e-07|1E-07|0.000000e+00|1.23e+05|0.000123|100000|1e+06|-0|1e+20|0.2|0|2"
        );
        assert_eq!(
            run("{{printf \"%v %v %v %v\" 1e21 123456789.0 0.000001 1e-5}}"),
            "1e+21 1.23456789e+08 1e-06 1e-05"
        );
        assert_eq!(
            run("{{printf \"%.2v|%10.3v|%8.2e\" 3.14159 3.14159 1234.5}}"),
            "3.1|      3.14|1.23e+03"
        );
        assert_eq!(
            run("{{printf \"%5t|%-7v|%07.2f|%x|%X\" true false -1.5 -1 3000000000}}"),
            " true|false  |-001.50|-1|B2D05E00"
        );
        assert_eq!(run("{{printf \"%d%%\" 50}}"), "50%");
    }

    #[test]
    fn printf_float_details() {
        // Verified against podman 4.3.1: precision 0 with %g/%v, the '#'
        // flag on floats, and the binary/hexadecimal float verbs.
        assert_eq!(
            run(
                "{{printf \"%+12.0v|%#1.1g|%#5.3s|%+5.1x|%#X|%-0.0X|%.1b|% 1.3b|%#01.10q|%#.0f|%#e\" \
                 1.5 2.5 1e20 100000.0 0.0 123456.789 123456.789 0.1 2.5 2.0 0.0}}"
            ),
            "           2|2.|%!s(float64=1.00e+20)|+0x1.8p+16|0X0.P+00|0X1P+17|\
             8483885939586761p-36| 7205759403792794p-56|%!q(float64=2.500000000)|2.|0.000000e+00"
        );
    }

    #[test]
    fn printf_errors_and_composites() {
        // Verified against podman 4.3.1.
        assert_eq!(
            run("{{printf \"%d\" \"x\"}} {{printf \"%s\" 3}} {{printf \"%d\"}} {{printf \"x\" 3}}"),
            "%!d(string=x) %!s(int=3) %!d(MISSING) x%!(EXTRA int=3)"
        );
        assert_eq!(
            run("{{printf \"%t|%v|%s|%d\" true false true true}}"),
            "true|false|%!s(bool=true)|%!d(bool=true)"
        );
        assert_eq!(run("{{printf \"%d %s\" 1}}"), "1 %!s(MISSING)");
        assert_eq!(
            run("{{printf \"%!\" 1}}|{{printf \"%\"}}|{{printf \"%z\" 1}}"),
            "%!!(int=1)|%!(NOVERB)|%!z(int=1)"
        );
        assert_eq!(
            run("{{printf \"%s\" nil}}|{{printf \"%v\" nil}}|{{printf \"%T\" nil}}"),
            "%!s(<nil>)|<nil>|<nil>"
        );
        assert_eq!(
            run("{{printf \"%T %T %T %T %T %T\" 1 \"a\" 1.5 true .Names .Labels}}"),
            "int string float64 bool []string map[string]string"
        );
        assert_eq!(
            run("{{printf \"%v|%d|%s|%q\" .Labels .Names .Size .Names}}"),
            "map[a:1 b:2]|[%!d(string=web) %!d(string=db)]|%!s(int=7800000)|[\"web\" \"db\"]"
        );
        assert_eq!(
            run("{{printf \"%[2]d %[1]d|%[3]d|%*d|%-*d|%.*f\" 1 2 5 3 5 3 2 3.14159}}"),
            "2 1|5|  5|2  |%!(BADPREC)%!f(MISSING)"
        );
        assert_eq!(run("{{printf \"%[5]d\" 1}}"), "%!d(BADINDEX)");
        assert_eq!(
            run("{{printf \"%q\" \"a\\tb\\x00é\\u2028\\U0001F600\\\\\\\"\"}}"),
            "\"a\\tb\\x00é\\u2028😀\\\\\\\"\""
        );
        assert_eq!(
            run("{{printf \"%+q|%#q|%#q\" \"é\" \"abc\" \"a`b\"}}"),
            "\"\\u00e9\"|`abc`|\"a`b\""
        );
    }

    #[test]
    fn podman_functions() {
        // Verified against podman 4.3.1.
        assert_eq!(
            run(
                "{{truncate \"abcdef\" 3}}|{{truncate \"ab\" 3}}|{{truncate \"abc\" 3}}|{{pad \"x\" 1 2}}|{{pad \"\" 1 2}}"
            ),
            "abc|ab|abc| x  |"
        );
        assert_eq!(
            run(
                "{{split \"a,b,c\" \",\"}}|{{join (split \"a,b,c\" \",\") \"-\"}}|{{title \"hello wOrld foo-bar\"}}|{{upper \"héllo\"}}|{{lower \"ABC\"}}"
            ),
            "[a b c]|a-b-c|Hello WOrld Foo-Bar|HÉLLO|abc"
        );
        assert_eq!(
            run("{{join .Names \", \"}}|{{truncate .ID 4}}|{{truncate .ID 1e0}}"),
            "web, db|3f2a|3"
        );
        // A piped value is the *last* argument, so this passes 4 as the string.
        assert_eq!(
            err("{{.ID | truncate 4}}"),
            "template: format:1:17: executing \"format\" at <4>: expected string; found 4"
        );
        assert_eq!(
            run("{{split \"abc\" \"\"}}|{{split \"\" \",\" | len}}|{{join .NoNames \",\"}}"),
            "[a b c]|1|"
        );
        assert_eq!(
            run("{{upper \"straße\"}} {{lower \"İSTANBUL\"}} {{title \"ǆemal_x y.z\"}}"),
            "STRAßE istanbul ǅemal_x Y.Z"
        );
    }

    #[test]
    fn json_function() {
        assert_eq!(
            run(
                "{{json .Names}}|{{json .Labels}}|{{json \"a<b>&\"}}|{{json 1.5}}|{{json .Missing}}"
            ),
            "[\"web\",\"db\"]|{\"a\":\"1\",\"b\":\"2\"}|\"a<b>&\"|1.5|null"
        );
        assert_eq!(
            run("{{json .Host}}"),
            "{\"Arch\":\"amd64\",\"CPUs\":4,\"OS\":{\"Name\":\"linux\"}}"
        );
        assert_eq!(
            run(
                "{{json .Big}} {{json .Million}} {{json 1e21}} {{json 0.0000001}} {{json .Nothing}}"
            ),
            "18446744073709551615 1000000 1e+21 1e-7 null"
        );
        assert_eq!(
            run("{{json \"tab\\there\\u2028\\x01\"}}"),
            "\"tab\\there\\u2028\\u0001\""
        );
        assert_eq!(run("{{split \"a,b\" \",\" | json}}"), "[\"a\",\"b\"]");
        let doc = json!({"Z": 1, "A": [true, null]});
        assert_eq!(
            run_with("{{json .}}", &doc),
            serde_json::to_string(&doc).unwrap()
        );
    }

    #[test]
    fn normalize_escapes_like_podman() {
        assert_eq!(
            normalize_escapes(r"{{.ID}}\t{{.Tag}}\n"),
            "{{.ID}}\t{{.Tag}}\n"
        );
        assert_eq!(normalize_escapes(r"a\\tb\x"), "a\\\tb\\x");
        assert_eq!(normalize_escapes("no escapes"), "no escapes");
        let src = normalize_escapes(r"{{.Repository}}\t{{.Tag}}");
        assert_eq!(run(&src), "docker.io/library/alpine\tlatest");
    }

    #[test]
    fn field_errors() {
        assert_eq!(
            err("{{.Tag.Foo}}"),
            "template: format:1:6: executing \"format\" at <.Tag.Foo>: can't evaluate field Foo in type string"
        );
        assert_eq!(
            err("{{.Size.X}}"),
            "template: format:1:7: executing \"format\" at <.Size.X>: can't evaluate field X in type int"
        );
        assert_eq!(
            err("{{.Nothing.X}}"),
            "template: format:1:10: executing \"format\" at <.Nothing.X>: nil pointer evaluating interface {}.X"
        );
        assert_eq!(
            err("a\nb{{.Host.Arch.Foo}}"),
            "template: format:2:8: executing \"format\" at <.Host.Arch.Foo>: can't evaluate field Foo in type string"
        );
        assert_eq!(
            err("{{\"x\" | .Tag}}"),
            "template: format:1:8: executing \"format\" at <.Tag>: Tag has arguments but cannot be invoked as function"
        );
        assert_eq!(
            err("{{(1).Foo}}"),
            "template: format:1:3: executing \"format\" at <1>: can't evaluate field Foo in type int"
        );
        assert_eq!(
            err("{{$x := 1}}{{$x 2}}"),
            "template: format:1:13: executing \"format\" at <$x>: can't give argument to non-function $x"
        );
        assert_eq!(
            err("{{ \"a\" \"b\" }}"),
            "template: format:1:3: executing \"format\" at <\"a\">: can't give argument to non-function \"a\""
        );
        assert_eq!(
            err("{{nil}}"),
            "template: format:1:2: executing \"format\" at <nil>: nil is not a command"
        );
        assert_eq!(
            err("{{range \"abc\"}}x{{end}}"),
            "template: format:1:8: executing \"format\" at <\"abc\">: range can't iterate over abc"
        );
    }

    #[test]
    fn argument_errors() {
        // Verified against podman 4.3.1.
        assert_eq!(
            err("{{\"x\" | len 1}}"),
            "template: format:1:8: executing \"format\" at <len>: wrong number of args for len: want 1 got 2"
        );
        assert_eq!(
            err("{{and}}"),
            "template: format:1:2: executing \"format\" at <and>: wrong number of args for and: want at least 1 got 0"
        );
        assert_eq!(
            err("{{upper 1}}"),
            "template: format:1:8: executing \"format\" at <1>: expected string; found 1"
        );
        assert_eq!(
            err("{{upper .Missing}}"),
            "template: format:1:8: executing \"format\" at <.Missing>: invalid value; expected string"
        );
        assert_eq!(
            err("{{upper nil}}"),
            "template: format:1:8: executing \"format\" at <nil>: cannot assign nil to string"
        );
        assert_eq!(
            err("{{printf .Size}}"),
            "template: format:1:9: executing \"format\" at <.Size>: wrong type for value; expected string; got int"
        );
        assert_eq!(
            err("{{join \"a\" \",\"}}"),
            "template: format:1:7: executing \"format\" at <\"a\">: can't handle \"a\" for arg of type []string"
        );
        assert_eq!(
            err("{{join .Names 1}}"),
            "template: format:1:14: executing \"format\" at <1>: expected string; found 1"
        );
        assert_eq!(
            err("{{truncate \"abc\" 1.5}}"),
            "template: format:1:17: executing \"format\" at <1.5>: expected integer; found 1.5"
        );
        assert_eq!(
            err("{{18446744073709551615}}"),
            "template: format:1:2: executing \"format\" at <18446744073709551615>: 18446744073709551615 overflows int"
        );
        assert_eq!(
            err("{{pad \"x\" -1 0}}"),
            "template: format:1:2: executing \"format\" at <pad \"x\" -1 0>: error calling pad: strings: negative Repeat count"
        );
    }

    #[test]
    fn parse_errors() {
        // Messages verified against podman 4.3.1.
        let cases = [
            ("{{.Tag", "template: format:1: unclosed action"),
            ("{{if true}}x", "template: format:1: unexpected EOF"),
            ("x{{end}}", "template: format:1: unexpected {{end}}"),
            ("{{else}}", "template: format:1: unexpected {{else}}"),
            ("{{$y}}", "template: format:1: undefined variable \"$y\""),
            ("{{}}", "template: format:1: missing value for command"),
            (
                "{{foo}}",
                "template: format:1: function \"foo\" not defined",
            ),
            (
                "a\nb{{nofunc 1}}",
                "template: format:2: function \"nofunc\" not defined",
            ),
            (
                "{{\"abc}}",
                "template: format:1: unterminated quoted string",
            ),
            ("{{ # }}", "template: format:1: unexpected \"#\" in command"),
            ("{{/* abc }}", "template: format:1: unclosed comment"),
            (
                "{{/* abc */ x}}",
                "template: format:1: comment ends before closing delimiter",
            ),
            ("{{(1}}", "template: format:1: unclosed left paren"),
            ("{{1)}}", "template: format:1: unexpected \")\" in command"),
            (
                "{{range}}{{end}}",
                "template: format:1: missing value for range",
            ),
            ("{{if}}{{end}}", "template: format:1: missing value for if"),
            (
                "{{with $x := 1}}{{$x}}{{end}}{{$x}}",
                "template: format:1: undefined variable \"$x\"",
            ),
            (
                "{{1 | 2}}",
                "template: format:1: non executable command in pipeline stage 2",
            ),
            (
                "{{1.Foo}}",
                "template: format:1: bad number syntax: \"1.F\"",
            ),
            (
                "{{99999999999999999999}}",
                "template: format:1: integer overflow: \"99999999999999999999\"",
            ),
            (
                "{{1e400}}",
                "template: format:1: illegal number syntax: \"1e400\"",
            ),
            ("{{08}}", "template: format:1: integer overflow: \"08\""),
            (
                "{{0x1F.5}}",
                "template: format:1: illegal number syntax: \"0x1F.5\"",
            ),
            ("{{.A-B}}", "template: format:1: bad character U+002D '-'"),
            ("{{é}}", "template: format:1: function \"é\" not defined"),
            (
                "{{$x, $y := 1}}",
                "template: format:1: too many declarations in command",
            ),
            (
                "{{range $x, $y, $z := .Names}}{{end}}",
                "template: format:1: too many declarations in range",
            ),
            (
                "{{break}}",
                "template: format:1: {{break}} outside {{range}}",
            ),
            (
                "{{if 1}}a{{else with 2}}b{{end}}",
                "template: format:1: unexpected <with> in input",
            ),
            (
                "{{\"a\" | printf}}{{",
                "template: format:1: unclosed action",
            ),
            (
                "{{.Tag\n",
                "template: format:2: unclosed action started at format:1",
            ),
            (
                "{{\x01}}",
                "template: format:1: unrecognized character in action: U+0001",
            ),
            ("{{end x}}", "template: format:1: unexpected \"x\" in end"),
        ];
        for (src, want) in cases {
            assert_eq!(err(src), want, "template {src:?}");
        }
    }

    #[test]
    fn nesting_limit() {
        let deep = format!("{}1{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(run(&format!("{{{{{deep}}}}}")), "1");
        let too_deep = format!("{{{{{}1{}}}}}", "(".repeat(200), ")".repeat(200));
        assert_eq!(
            err(&too_deep),
            "template: format:1: max expression depth exceeded"
        );
        let recursive = "{{define \"r\"}}{{template \"r\" .}}{{end}}{{template \"r\" .}}";
        assert!(err(recursive).ends_with("exceeded maximum template depth (100)"));
    }

    #[test]
    fn partial_output_and_names() {
        let t = Template::parse_named("images", "a{{.Tag}}b{{.Tag.X}}c").unwrap();
        let mut out = String::new();
        let e = t.execute_into(&data(), &mut out).unwrap_err();
        assert_eq!(out, "alatestb");
        assert_eq!(
            e.to_string(),
            "template: images:1:16: executing \"images\" at <.Tag.X>: can't evaluate field X in type string"
        );
    }

    #[test]
    fn podman_style_table_row() {
        // The caller strips `table `, normalizes escapes and feeds rows one by
        // one; this is what one row of `podman images --format` produces.
        let src = normalize_escapes(r"{{.Repository}}\t{{.Tag}}\t{{truncate .ID 12}}\n");
        let t = Template::parse(&src).unwrap();
        assert_eq!(
            t.execute(&data()).unwrap(),
            "docker.io/library/alpine\tlatest\t3f2a9c1b7d8e\n"
        );
    }
}
