//! Go `text/template` for `--format`: field access (`{{.A.B}}`), `{{json .X}}`,
//! `{{upper .X}}`/`{{lower .X}}`, and literal text. The caller strips Podman's `table `
//! prefix. Values print as Go's `%v` does.

use serde_json::Value;

#[derive(Debug)]
pub struct TemplateError(String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for TemplateError {}

enum Piece {
    Text(String),
    Action {
        func: Option<String>,
        path: Vec<String>,
    },
}

pub struct Template {
    pieces: Vec<Piece>,
}

/// Podman turns the two-character sequences `\t` and `\n` into tab and newline.
pub fn normalize_escapes(s: &str) -> String {
    s.replace("\\t", "\t").replace("\\n", "\n")
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = src;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let end = rest[start..].find("}}").ok_or_else(|| {
                TemplateError(format!("template: format: unclosed action in {src:?}"))
            })?;
            let action = rest[start + 2..start + end].trim().trim_matches('-').trim();
            let words: Vec<&str> = action.split_whitespace().collect();
            let (func, arg) = match words.as_slice() {
                [arg] => (None, *arg),
                [f, arg] if ["json", "upper", "lower"].contains(f) => (Some(f.to_string()), *arg),
                [arg, "|", f] if ["json", "upper", "lower"].contains(f) => {
                    (Some(f.to_string()), *arg)
                }
                _ => {
                    return Err(TemplateError(format!(
                        "template: format: unsupported action {{{{{action}}}}}"
                    )));
                }
            };
            if !arg.starts_with('.') {
                return Err(TemplateError(format!(
                    "template: format: function {arg:?} not defined"
                )));
            }
            let path = arg[1..]
                .split('.')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            pieces.push(Piece::Action { func, path });
            rest = &rest[start + end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template { pieces })
    }

    pub fn execute(&self, data: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Action { func, path } => {
                    let mut v = data;
                    let missing = Value::Null;
                    let mut found = true;
                    for field in path {
                        v = match v {
                            Value::Object(o) => match o.get(field) {
                                Some(x) => x,
                                None => {
                                    found = false;
                                    &missing
                                }
                            },
                            other => {
                                return Err(TemplateError(format!(
                                    "template: format: can't evaluate field {field} in type {}",
                                    go_type(other)
                                )));
                            }
                        };
                    }
                    let s = match func.as_deref() {
                        Some("json") => serde_json::to_string(v).unwrap_or_default(),
                        Some("upper") => go_print(v, found).to_uppercase(),
                        Some("lower") => go_print(v, found).to_lowercase(),
                        _ => go_print(v, found),
                    };
                    out.push_str(&s);
                }
            }
        }
        Ok(out)
    }
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Number(_) => "int",
        Value::Bool(_) => "bool",
        Value::Array(_) => "[]interface {}",
        _ => "interface {}",
    }
}

fn go_print(v: &Value, found: bool) -> String {
    match v {
        Value::Null if !found => "<no value>".into(),
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter()
                .map(|x| go_print(x, true))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, x)| format!("{k}:{}", go_print(x, true)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_functions_and_errors() {
        let d = json!({"ID": "abc", "Config": {"Cmd": ["sh", "-c"]}, "L": {"b": "2", "a": "1"}});
        let t = |s: &str| Template::parse(s).unwrap().execute(&d).unwrap();
        assert_eq!(t("id={{.ID}}"), "id=abc");
        assert_eq!(t("{{.Config.Cmd}}"), "[sh -c]");
        assert_eq!(t("{{json .Config.Cmd}}"), "[\"sh\",\"-c\"]");
        assert_eq!(t("{{.L}}"), "map[a:1 b:2]");
        assert_eq!(t("{{.Nope}}"), "<no value>");
        assert_eq!(t("{{upper .ID}}"), "ABC");
        assert!(Template::parse("{{.ID").is_err());
        assert!(Template::parse("{{.ID.X}}").unwrap().execute(&d).is_err());
        assert_eq!(normalize_escapes("a\\tb"), "a\tb");
    }
}
