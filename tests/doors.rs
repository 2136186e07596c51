//! Recipes, the REPL and notebooks are one language with one set of bindings: the same recipe
//! (tests/fixtures/doors.rhai: evaluate, train two steps, evaluate) gives the same numbers through
//! `ragtune run`, pasted into `ragtune repl`, and executed as a notebook on the kernel.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::tmux::{self, Tmux};

fn result_line(text: &str) -> String {
    text.lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{text}"))
        .trim()
        .to_string()
}

/// Runs a command that must succeed and returns what it printed.
fn stdout_of(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const NOTEBOOK: &str = r#"
import os, subprocess, sys, tempfile
import nbformat
from nbclient import NotebookClient
prefix = tempfile.mkdtemp()
subprocess.run([os.environ["RAGTUNE_BIN"], "kernel", "install", "--prefix", prefix], check=True,
               stdout=subprocess.DEVNULL)
os.environ["JUPYTER_PATH"] = os.path.join(prefix, "share", "jupyter")
nb = nbformat.v4.new_notebook()
nb.cells = [nbformat.v4.new_code_cell(open(sys.argv[1]).read()),
            nbformat.v4.new_code_cell(open(sys.argv[2]).read())]
NotebookClient(nb, timeout=300, kernel_name="ragtune").execute()
for cell in nb.cells:
    for out in cell.outputs:
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            print(out["text"], end="")
"#;

#[test]
fn the_same_recipe_gives_the_same_numbers_through_every_door() {
    let has_tools = tmux::available()
        && Command::new(common::python())
            .args(["-c", "import nbclient, nbformat"])
            .output()
            .is_ok_and(|o| o.status.success());
    if common::skip_unless(
        has_tools,
        "tmux and python with nbclient (to drive the REPL and a notebook)",
    ) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&dir.path().join("tiny"), 32);
    let apiary = root.join("recipes/data/apiary");
    let recipe_path = root.join("tests/fixtures/doors.rhai");
    let recipe = std::fs::read_to_string(&recipe_path).unwrap();
    let settings = |door: &str| {
        format!(
            "let apiary = \"{}\";\nlet model = \"{}\";\nlet output = \"{}\";\n",
            apiary.display(),
            model.display(),
            dir.path().join(door).display()
        )
    };

    // 1. ragtune run
    let from_run = result_line(&stdout_of(
        Command::new(env!("CARGO_BIN_EXE_ragtune"))
            .arg("run")
            .arg(&recipe_path)
            .arg("--set")
            .arg(format!("apiary={}", apiary.display()))
            .arg("--set")
            .arg(format!("model={}", model.display()))
            .arg("--set")
            .arg(format!("output={}", dir.path().join("run").display())),
    ));

    // 2. pasted into the REPL
    let command = format!(
        "{} repl --history {}",
        env!("CARGO_BIN_EXE_ragtune"),
        dir.path().join("history").display()
    );
    let t = Tmux::start("doors", &command, dir.path());
    t.wait_for("rt> ", Duration::from_secs(30));
    t.paste(&format!("{}{recipe}", settings("repl")));
    t.keys(&["Enter"]);
    let screen = t.wait_for("\nRESULT ", Duration::from_secs(60));
    let from_repl = result_line(&screen);

    // 3. a notebook on the kernel
    let settings_file = dir.path().join("settings.rhai");
    std::fs::write(&settings_file, settings("notebook")).unwrap();
    let from_notebook = result_line(&stdout_of(
        Command::new(common::python())
            .args(["-c", NOTEBOOK])
            .arg(&settings_file)
            .arg(&recipe_path)
            .env("RAGTUNE_BIN", env!("CARGO_BIN_EXE_ragtune")),
    ));

    println!("run:      {from_run}\nrepl:     {from_repl}\nnotebook: {from_notebook}");
    assert_eq!(from_run, from_repl);
    assert_eq!(from_run, from_notebook);
}
