//! `ragtune repl`: the interactive front end on a [`Session`], with rustyline for editing.
//!
//! Inputs run in one session, so variables, models and datasets persist. The editor completes
//! bindings, variables, methods and option keys, keeps a history file, and keeps reading lines
//! while brackets are open. Ctrl-C at the prompt clears the line; during a long call it interrupts
//! the call and the session lives on. Ctrl-D leaves. Commands start with `:`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper};

use crate::script::values::rich;
use crate::script::{Completeness, Session};

const COMMANDS: &[(&str, &str)] = &[
    (
        ":help",
        "this list; help() lists the bindings, help(\"name\") documents one",
    ),
    (":load", ":load FILE.rhai  runs a recipe in this session"),
    (
        ":save",
        ":save FILE.rhai  writes this session's successful inputs as a recipe",
    ),
    (":vars", "the session's variables and their types"),
    (":quit", "leave (Ctrl-D does the same)"),
];

/// Where the history lives unless `--history` says otherwise.
pub fn default_history_path() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("ragtune").join("history")
}

/// The editor's view of the session: completion and the is-it-complete question.
struct ReplHelper {
    /// The session's variable names, refreshed after every input (the session itself is busy
    /// running inputs, so the helper keeps a copy).
    variables: RefCell<Vec<String>>,
    files: FilenameCompleter,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let pair = |s: &str| Pair {
            display: s.to_string(),
            replacement: s.to_string(),
        };
        if let Some(rest) = line.strip_prefix(':') {
            if rest.contains(' ') {
                return self.files.complete(line, pos, ctx);
            }
            let matches = COMMANDS
                .iter()
                .filter(|(c, _)| c.starts_with(&line[..pos]))
                .map(|(c, _)| pair(c))
                .collect();
            return Ok((0, matches));
        }
        let c = crate::script::complete::complete(line, pos, &self.variables.borrow());
        Ok((c.start, c.matches.iter().map(|m| pair(m)).collect()))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        if input.trim_start().starts_with(':') {
            return Ok(ValidationResult::Valid(None));
        }
        Ok(match crate::script::complete::is_complete(input) {
            Completeness::Incomplete { .. } => ValidationResult::Incomplete,
            _ => ValidationResult::Valid(None),
        })
    }
}

impl Helper for ReplHelper {}

/// Runs the REPL until Ctrl-D or `:quit`.
pub fn run(history: &Path) -> Result<()> {
    crate::interrupt::catch_sigint();
    let mut session = Session::new();
    let mut editor: Editor<ReplHelper, rustyline::history::DefaultHistory> =
        Editor::new().context("cannot start the line editor")?;
    editor.set_helper(Some(ReplHelper {
        variables: RefCell::new(Vec::new()),
        files: FilenameCompleter::new(),
    }));
    if let Some(dir) = history.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // A missing history file is a first run, not an error.
    let _ = editor.load_history(history);
    println!(
        "ragtune {} — help() lists the bindings, :help the commands, Ctrl-D leaves.",
        env!("CARGO_PKG_VERSION")
    );
    let mut count = 0usize;
    loop {
        match editor.readline("rt> ") {
            Ok(input) => {
                if input.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(input.as_str());
                if let Err(e) = editor.save_history(history) {
                    eprintln!("cannot write the history file {}: {e}", history.display());
                }
                count += 1;
                if !run_input(&mut session, &input, count) {
                    break;
                }
                if let Some(h) = editor.helper_mut() {
                    *h.variables.borrow_mut() = session.variables();
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading input"),
        }
    }
    Ok(())
}

/// Runs one input or command; `false` ends the REPL.
fn run_input(session: &mut Session, input: &str, count: usize) -> bool {
    let trimmed = input.trim();
    if let Some(command) = trimmed.strip_prefix(':') {
        let (name, arg) = command
            .split_once(char::is_whitespace)
            .unwrap_or((command, ""));
        let arg = arg.trim();
        match name {
            "quit" | "q" | "exit" => return false,
            "help" | "h" => {
                for (c, doc) in COMMANDS {
                    println!("{c:<7} {doc}");
                }
            }
            "vars" => {
                for name in session.variables() {
                    if let Some(v) = session.variable(&name) {
                        println!("{name}: {}", v.type_name());
                    }
                }
            }
            "load" if !arg.is_empty() => match session.run_file(Path::new(arg)) {
                Ok(value) => show(&value),
                Err(e) => eprintln!("{e:#}"),
            },
            "save" if !arg.is_empty() => match save(session, Path::new(arg)) {
                Ok(n) => println!("saved {n} inputs to {arg}"),
                Err(e) => eprintln!("{e:#}"),
            },
            "load" | "save" => eprintln!(":{name} needs a file name, e.g. :{name} recipe.rhai"),
            _ => eprintln!("unknown command :{name}; :help lists them"),
        }
        return true;
    }
    match session.eval(input, &format!("<input {count}>")) {
        Ok(value) => show(&value),
        Err(e) => eprintln!("{e}"),
    }
    true
}

fn show(value: &rhai::Dynamic) {
    if !value.is_unit() {
        println!("{}", rich(value).text);
    }
}

/// Writes the session's successful inputs as a recipe.
fn save(session: &Session, path: &Path) -> Result<usize> {
    let inputs = session.inputs();
    let mut text = String::from(
        "// Saved from `ragtune repl`: the inputs that ran without error, in order.\n\n",
    );
    for input in inputs {
        // Each input ran as a whole; a `;` keeps it a statement of its own in the recipe (after a
        // block it is an empty statement, which Rhai accepts).
        let input = input.trim_end();
        text.push_str(input);
        if !input.ends_with(';') {
            text.push(';');
        }
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(inputs.len())
}
