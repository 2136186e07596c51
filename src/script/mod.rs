//! The Rhai scripting layer: one [`Session`] that all three front ends drive — recipes
//! (`ragtune run`), the REPL and the Jupyter kernel. Bindings live in [`bindings`] and forward to
//! the Rust API; [`complete`] answers the editing questions (completion, is-it-complete,
//! inspection); no pipeline logic lives here.

pub mod bindings;
pub mod complete;
pub mod values;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rhai::{Dynamic, Engine, EvalAltResult, Position, Scope, AST};

pub use bindings::{binding_docs, BindingDoc};
pub use complete::{Completeness, Completion};

use crate::render::Rich;

/// Where a session's output goes: `print` text and `display`ed values. A terminal prints text; the
/// Jupyter kernel turns them into stream and display_data messages.
pub trait Output: Send + Sync {
    fn print(&self, text: &str);
    fn display(&self, value: &Rich);
}

/// Output for terminals: everything as text on stdout.
pub struct Stdout;

impl Output for Stdout {
    fn print(&self, text: &str) {
        println!("{text}");
    }

    fn display(&self, value: &Rich) {
        println!("{}", value.text);
    }
}

/// A script failure located in its source: `origin:line:column: message`.
#[derive(Debug, Clone)]
pub struct ScriptError {
    pub origin: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    /// The offending source line, shown under the message with a caret at the column.
    pub source_line: Option<String>,
    /// The input stopped because the user interrupted it (Ctrl-C, a Jupyter interrupt).
    pub interrupted: bool,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.origin, self.message)?,
            (Some(l), None) => write!(f, "{}:{l}: {}", self.origin, self.message)?,
            _ => write!(f, "{}: {}", self.origin, self.message)?,
        }
        if let (Some(text), Some(l)) = (&self.source_line, self.line) {
            let gutter = format!("{l:>4} | ");
            write!(f, "\n{gutter}{text}")?;
            if let Some(c) = self.column {
                write!(f, "\n{:>w$}{:>c$}", "| ", "^", w = gutter.len())?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ScriptError {}

impl ScriptError {
    fn at(origin: &str, source: &str, pos: Position, message: String) -> Self {
        let line = pos.line();
        Self {
            origin: origin.to_string(),
            line,
            column: pos.position(),
            message,
            source_line: line
                .and_then(|l| source.lines().nth(l - 1))
                .map(str::to_string),
            interrupted: false,
        }
    }

    fn from_eval(origin: &str, source: &str, err: &EvalAltResult) -> Self {
        // Both Rhai's own termination (a loop stopped by `on_progress`) and an API call that
        // returned `Interrupted` (with its own message, e.g. where a checkpoint is) leave the
        // flag raised.
        let interrupted = crate::interrupt::requested();
        let message = match err {
            EvalAltResult::ErrorTerminated(..) => "interrupted by the user".to_string(),
            _ => {
                // Rhai appends " (line l, position c)"; the location is reported separately.
                let message = err.to_string();
                match message.rfind(" (line ") {
                    Some(i) if message.ends_with(')') => message[..i].to_string(),
                    _ => message,
                }
            }
        };
        let mut e = Self::at(origin, source, err.position(), message);
        e.interrupted = interrupted;
        e
    }
}

/// A long-lived scripting session: variables, loaded models and datasets persist between inputs.
pub struct Session {
    engine: Engine,
    scope: Scope<'static>,
    /// Inputs that ran without error, in order (the REPL's `:save` writes them as a recipe).
    inputs: Vec<String>,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A session printing to stdout.
    pub fn new() -> Self {
        Self::with_output(Arc::new(Stdout))
    }

    pub fn with_output(output: Arc<dyn Output>) -> Self {
        let mut engine = Engine::new();
        // Data science scripts build big strings and deep expressions; keep Rhai's safety limits
        // generous but present.
        engine.set_max_expr_depths(256, 256);
        let print_to = output.clone();
        engine.on_print(move |text| print_to.print(text));
        let debug_to = output.clone();
        engine.on_debug(move |text, _, pos| match pos.line() {
            Some(l) => debug_to.print(&format!("[line {l}] {text}")),
            None => debug_to.print(text),
        });
        // Called between script operations: a raised interrupt flag ends the script (API calls
        // check the same flag between their own units of work).
        engine.on_progress(|_| crate::interrupt::requested().then(|| Dynamic::from("interrupted")));
        bindings::register(&mut engine, output);
        Self {
            engine,
            scope: Scope::new(),
            inputs: Vec::new(),
        }
    }

    /// Defines a variable visible to the next inputs (used by `--set key=value`).
    pub fn set_var(&mut self, name: &str, value: Dynamic) {
        self.scope.set_or_push(name.to_string(), value);
    }

    /// Parses `--set` values: integers, floats and booleans keep their type, the rest are strings.
    pub fn parse_value(text: &str) -> Dynamic {
        if let Ok(i) = text.parse::<i64>() {
            Dynamic::from(i)
        } else if let Ok(f) = text.parse::<f64>() {
            Dynamic::from(f)
        } else if let Ok(b) = text.parse::<bool>() {
            Dynamic::from(b)
        } else {
            Dynamic::from(text.to_string())
        }
    }

    pub fn compile(&self, source: &str, origin: &str) -> Result<AST, ScriptError> {
        self.engine
            .compile_with_scope(&self.scope, source)
            .map_err(|e| ScriptError::at(origin, source, e.position(), e.err_type().to_string()))
    }

    /// Runs `source` in this session and returns the value of its last statement. A pending
    /// interrupt from before is forgotten first.
    pub fn eval(&mut self, source: &str, origin: &str) -> Result<Dynamic, ScriptError> {
        crate::interrupt::clear();
        let ast = self.compile(source, origin)?;
        let defined = self.scope.len();
        let value = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &ast)
            .map_err(|e| {
                // A failed input defines nothing: the session's variables stay those that the
                // successful inputs (what `:save` writes) define.
                self.scope.rewind(defined);
                ScriptError::from_eval(origin, source, &e)
            })?;
        self.inputs.push(source.to_string());
        Ok(value)
    }

    /// Runs a script file in this session.
    pub fn run_file(&mut self, path: &Path) -> Result<Dynamic> {
        let source = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read script {}", path.display()))?;
        Ok(self.eval(&source, &path.display().to_string())?)
    }

    /// The inputs that ran without error, in order.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// Names of the session's variables.
    pub fn variables(&self) -> Vec<String> {
        self.scope
            .iter()
            .map(|(name, _, _)| name.to_string())
            .collect()
    }

    /// A variable's value.
    pub fn variable(&self, name: &str) -> Option<Dynamic> {
        self.scope.get_value::<Dynamic>(name)
    }

    /// Completions for the word before `cursor` (a byte offset into `code`).
    pub fn complete(&self, code: &str, cursor: usize) -> Completion {
        complete::complete(code, cursor, &self.variables())
    }

    /// Whether `code` can run as it is, or needs more lines (open brackets, strings, comments).
    pub fn is_complete(&self, code: &str) -> Completeness {
        complete::is_complete(code)
    }

    /// Documentation of the name under `cursor`: a binding's full help, or a variable's value.
    pub fn inspect(&self, code: &str, cursor: usize) -> Option<String> {
        let word = complete::word_at(code, cursor)?;
        if let Some(value) = self.variable(word) {
            return Some(format!(
                "{word}: {}\n{}",
                value.type_name(),
                values::rich(&value).text
            ));
        }
        bindings::help_for(complete::docs(), word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_line_and_column() {
        let mut s = Session::new();
        let err = s.eval("let x = 1;\nlet y = x +;\n", "t.rhai").unwrap_err();
        assert_eq!((err.origin.as_str(), err.line), ("t.rhai", Some(2)));
        let err = s
            .eval(
                "let a = 1;\n  load_beir(\"/no/such/dir\", \"test\")",
                "u.rhai",
            )
            .unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.column.is_some());
        assert!(err.message.contains("/no/such/dir"), "{err}");
        assert!(err.to_string().starts_with("u.rhai:2:"), "{err}");
    }

    #[test]
    fn variables_persist_and_set_values_are_typed() {
        let mut s = Session::new();
        s.set_var("k", Session::parse_value("10"));
        let _ = s.eval("let twice = k * 2;", "a").unwrap();
        assert_eq!(s.eval("twice", "b").unwrap().as_int().unwrap(), 20);
        assert!(Session::parse_value("0.5").is_float());
        assert!(Session::parse_value("dev").is_string());
    }
}
