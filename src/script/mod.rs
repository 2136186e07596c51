//! The Rhai scripting layer: one [`Session`] that recipes (`ragtune run`), and later the REPL and
//! the Jupyter kernel, drive. Bindings live in [`bindings`] and forward to the Rust API; no
//! pipeline logic lives here.

pub mod bindings;
pub mod values;

use std::path::Path;

use anyhow::{Context, Result};
use rhai::{Dynamic, Engine, EvalAltResult, Position, Scope, AST};

pub use bindings::{binding_docs, BindingDoc};

/// A script failure located in its source: `origin:line:column: message`.
#[derive(Debug, Clone)]
pub struct ScriptError {
    pub origin: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.origin, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.origin, self.message),
            _ => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ScriptError {}

impl ScriptError {
    fn at(origin: &str, pos: Position, message: String) -> Self {
        Self {
            origin: origin.to_string(),
            line: pos.line(),
            column: pos.position(),
            message,
        }
    }

    fn from_eval(origin: &str, err: &EvalAltResult) -> Self {
        // Rhai appends " (line l, position c)" to messages; the location is reported separately.
        let message = err.to_string();
        let message = match message.rfind(" (line ") {
            Some(i) if message.ends_with(')') => message[..i].to_string(),
            _ => message,
        };
        Self::at(origin, err.position(), message)
    }
}

/// A long-lived scripting session: variables, loaded models and datasets persist between inputs.
pub struct Session {
    engine: Engine,
    scope: Scope<'static>,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    pub fn new() -> Self {
        let mut engine = Engine::new();
        // Data science scripts build big strings and deep expressions; keep Rhai's safety limits
        // generous but present.
        engine.set_max_expr_depths(256, 256);
        bindings::register(&mut engine);
        Self {
            engine,
            scope: Scope::new(),
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
            .map_err(|e| ScriptError::at(origin, e.position(), e.err_type().to_string()))
    }

    /// Runs `source` in this session and returns the value of its last statement.
    pub fn eval(&mut self, source: &str, origin: &str) -> Result<Dynamic, ScriptError> {
        let ast = self.compile(source, origin)?;
        self.engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &ast)
            .map_err(|e| ScriptError::from_eval(origin, &e))
    }

    /// Runs a script file in this session.
    pub fn run_file(&mut self, path: &Path) -> Result<Dynamic> {
        let source = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read script {}", path.display()))?;
        Ok(self.eval(&source, &path.display().to_string())?)
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
