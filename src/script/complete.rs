//! What an editor asks of the language, answered once for the REPL and the Jupyter kernel:
//! completions at the cursor (bindings, variables, methods after `.`, option keys inside a
//! `#{…}` passed to a binding), whether an input is complete or needs more lines, and the word
//! under the cursor. A small lexical scan (strings, comments, brackets) is enough for all three;
//! no Rhai parse is needed, which keeps answers instant while a long cell runs.

use std::sync::OnceLock;

use super::bindings::{self, BindingDoc};

/// Completions for the text between `start` and `end` (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Completion {
    pub start: usize,
    pub end: usize,
    pub matches: Vec<String>,
}

/// Whether an input can run as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    Complete,
    /// More lines are needed; `indent` is a hint for the next one.
    Incomplete {
        indent: String,
    },
    /// It cannot become valid by adding lines (a closing bracket with no opener).
    Invalid,
}

const KEYWORDS: &[&str] = &[
    "let", "const", "fn", "if", "else", "for", "in", "while", "loop", "break", "continue",
    "return", "true", "false", "print", "debug", "switch", "throw", "try", "catch",
];

/// Every binding's documentation, built once per process (it takes registering every binding).
pub(crate) fn docs() -> &'static [BindingDoc] {
    static DOCS: OnceLock<Vec<BindingDoc>> = OnceLock::new();
    DOCS.get_or_init(bindings::binding_docs)
}

/// A binding is a method when its signature reads `receiver.name(…)`.
fn is_method(doc: &BindingDoc) -> bool {
    doc.signature
        .split('(')
        .next()
        .is_some_and(|head| head.contains('.'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Paren,
    Bracket,
    Brace,
    /// `#{`: an object map.
    Map,
}

/// The lexical state at the end of a text.
#[derive(Debug, Default)]
struct Scan {
    /// Open brackets and their byte offsets, innermost last.
    open: Vec<(Open, usize)>,
    /// A closing bracket that matches nothing.
    stray_close: bool,
    in_string: bool,
    in_backtick: bool,
    in_block_comment: bool,
}

fn scan(code: &str) -> Scan {
    let bytes = code.as_bytes();
    let mut s = Scan::default();
    let mut depth_comment = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if depth_comment > 0 {
            match (c, next) {
                (b'*', Some(b'/')) => {
                    depth_comment -= 1;
                    i += 1;
                }
                (b'/', Some(b'*')) => {
                    depth_comment += 1;
                    i += 1;
                }
                _ => {}
            }
        } else if s.in_string {
            match c {
                b'\\' => i += 1,
                b'"' => s.in_string = false,
                _ => {}
            }
        } else if s.in_backtick {
            if c == b'`' {
                s.in_backtick = false;
            }
        } else {
            match (c, next) {
                (b'/', Some(b'/')) => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                (b'/', Some(b'*')) => {
                    depth_comment = 1;
                    i += 1;
                }
                (b'"', _) => s.in_string = true,
                (b'`', _) => s.in_backtick = true,
                (b'\'', _) => {
                    // A character literal: skip it whole so '(' does not count.
                    let end = code[i + 1..].find('\'').map_or(bytes.len(), |e| i + 1 + e);
                    i = end;
                }
                (b'#', Some(b'{')) => {
                    s.open.push((Open::Map, i));
                    i += 1;
                }
                (b'(', _) => s.open.push((Open::Paren, i)),
                (b'[', _) => s.open.push((Open::Bracket, i)),
                (b'{', _) => s.open.push((Open::Brace, i)),
                (b')' | b']' | b'}', _) => {
                    let want: &[Open] = match c {
                        b')' => &[Open::Paren],
                        b']' => &[Open::Bracket],
                        _ => &[Open::Brace, Open::Map],
                    };
                    match s.open.last() {
                        Some((o, _)) if want.contains(o) => {
                            s.open.pop();
                        }
                        _ => s.stray_close = true,
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    s.in_block_comment = depth_comment > 0;
    s
}

/// Whether `code` can run now. Open brackets, a backtick string or block comment still open, or
/// a trailing operator ask for more lines.
pub fn is_complete(code: &str) -> Completeness {
    let s = scan(code);
    if s.stray_close {
        return Completeness::Invalid;
    }
    if s.in_string {
        // Rhai's "…" strings end at the line's end; a newline cannot complete one.
        return Completeness::Invalid;
    }
    let indent = "    ".repeat(s.open.len().max(1));
    if !s.open.is_empty() || s.in_backtick || s.in_block_comment {
        return Completeness::Incomplete { indent };
    }
    let last_line = code.lines().last().unwrap_or("");
    let code_part = last_line.split("//").next().unwrap_or("").trim_end();
    let continues = ["=", "+", "-", "*", "/", ",", ".", "&&", "||", "|>"]
        .iter()
        .any(|op| code_part.ends_with(op))
        && !code_part.ends_with("*/");
    if continues {
        return Completeness::Incomplete { indent };
    }
    Completeness::Complete
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The identifier around `cursor`.
pub fn word_at(code: &str, cursor: usize) -> Option<&str> {
    let cursor = cursor.min(code.len());
    let bytes = code.as_bytes();
    let mut start = cursor;
    while start > 0 && is_word_byte(bytes[start - 1]) {
        start -= 1;
    }
    let mut end = cursor;
    while end < bytes.len() && is_word_byte(bytes[end]) {
        end += 1;
    }
    (start < end).then(|| &code[start..end])
}

/// The identifier that ends right before byte `end` (spaces skipped).
fn word_before(code: &str, end: usize) -> Option<&str> {
    let trimmed = code[..end].trim_end();
    let bytes = trimmed.as_bytes();
    let mut start = trimmed.len();
    while start > 0 && is_word_byte(bytes[start - 1]) {
        start -= 1;
    }
    (start < trimmed.len()).then(|| &trimmed[start..])
}

/// Which options map the cursor is in: the key it is the value of (`loss: #{`), or the binding it
/// is passed to (`train(m, d, #{`).
fn map_context(code: &str, open: &[(Open, usize)]) -> Option<String> {
    let (&(_, at), outer) = open.split_last()?;
    let before = code[..at].trim_end();
    if let Some(key_end) = before.strip_suffix(':') {
        return word_before(key_end, key_end.len()).map(str::to_string);
    }
    let &(kind, paren) = outer.last()?;
    (kind == Open::Paren)
        .then(|| word_before(code, paren).map(str::to_string))
        .flatten()
}

/// Completions for the word before `cursor`.
pub fn complete(code: &str, cursor: usize, variables: &[String]) -> Completion {
    let mut cursor = cursor.min(code.len());
    while !code.is_char_boundary(cursor) {
        cursor -= 1;
    }
    let before = &code[..cursor];
    let bytes = before.as_bytes();
    let mut start = cursor;
    while start > 0 && is_word_byte(bytes[start - 1]) {
        start -= 1;
    }
    let prefix = &before[start..];
    let previous = before[..start].trim_end().chars().last();
    let s = scan(before);

    let mut candidates: Vec<String> = if previous == Some('.') && !before[..start].ends_with(' ') {
        docs()
            .iter()
            .filter(|d| is_method(d))
            .map(|d| d.name.to_string())
            .chain(bindings::PROPERTIES.iter().map(|p| p.to_string()))
            .collect()
    } else if matches!(s.open.last(), Some((Open::Map, _))) && matches!(previous, Some('{' | ',')) {
        map_context(before, &s.open)
            .map(|context| bindings::option_keys(&context))
            .unwrap_or_default()
    } else {
        docs()
            .iter()
            .filter(|d| !is_method(d))
            .map(|d| d.name.to_string())
            .chain(variables.iter().cloned())
            .chain(KEYWORDS.iter().map(|k| k.to_string()))
            .collect()
    };
    candidates.retain(|c| c.starts_with(prefix));
    candidates.sort();
    candidates.dedup();
    Completion {
        start,
        end: cursor,
        matches: candidates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incomplete(code: &str) -> bool {
        matches!(is_complete(code), Completeness::Incomplete { .. })
    }

    #[test]
    fn open_brackets_strings_and_comments_need_more_lines() {
        assert_eq!(is_complete("let x = 1;"), Completeness::Complete);
        assert_eq!(is_complete(""), Completeness::Complete);
        assert!(incomplete("let m = #{ a: 1,"));
        assert!(incomplete("fn f(x) {\n  if x > 1 {"));
        assert!(incomplete("let s = `multi\nline"));
        assert!(incomplete("/* note"));
        assert!(incomplete("let x ="));
        assert!(incomplete("let y = 1 +  // more"));
        // Brackets inside strings, chars and comments do not count.
        assert_eq!(is_complete("print(\"(\") // {"), Completeness::Complete);
        assert_eq!(is_complete("let c = '{';"), Completeness::Complete);
        assert_eq!(is_complete("let x = [1, (2)];"), Completeness::Complete);
        assert_eq!(is_complete("let x = 1; }"), Completeness::Invalid);
        assert_eq!(is_complete("f(]"), Completeness::Invalid);
        assert_eq!(
            is_complete("train(m, d, #{\n"),
            Completeness::Incomplete {
                indent: "        ".into()
            }
        );
    }

    #[test]
    fn completes_bindings_variables_methods_and_option_keys() {
        let vars = vec!["data".to_string(), "dev".to_string()];
        let c = complete("let e = load_enc", 16, &vars);
        assert_eq!(
            (c.start, c.matches.clone()),
            (8, vec!["load_encoder".to_string()])
        );
        let c = complete("print(de", 8, &vars);
        assert!(c.matches.contains(&"dev".to_string()), "{c:?}");
        assert!(c.matches.contains(&"debug".to_string()));
        // After a dot: methods and properties, not free functions.
        let c = complete("data.co", 7, &vars);
        assert_eq!(c.matches, vec!["column", "columns", "comparison", "corpus"]);
        // Inside the options map of train(): TrainConfig keys and the run's own.
        let code = "train(\"m\", pairs, #{output: \"o\", ep";
        let c = complete(code, code.len(), &vars);
        assert_eq!(c.matches, vec!["epochs"]);
        let code = "train(\"m\", pairs, #{ lo";
        assert_eq!(complete(code, code.len(), &vars).matches, vec!["loss"]);
        // A nested map takes the keys of its own key.
        let code = "train(\"m\", pairs, #{loss: #{na";
        assert_eq!(complete(code, code.len(), &vars).matches, vec!["name"]);
        let code = "mine(base, pairs, data, #{range_m";
        assert_eq!(
            complete(code, code.len(), &vars).matches,
            vec!["range_max", "range_min"]
        );
        // A value position inside a map completes expressions, not keys.
        let code = "train(\"m\", pairs, #{dev: de";
        assert!(complete(code, code.len(), &vars)
            .matches
            .contains(&"dev".to_string()));
    }

    #[test]
    fn word_under_the_cursor() {
        assert_eq!(word_at("x = mine(a)", 6), Some("mine"));
        assert_eq!(word_at("x = mine(a)", 8), Some("mine"));
        assert_eq!(word_at("  ", 1), None);
    }
}
