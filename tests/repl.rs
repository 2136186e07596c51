//! `ragtune repl` driven in a pseudo-terminal (tmux) as a user would: multi-line input, a
//! completion, an error, Ctrl-C during a long call, `:save`, history, and Ctrl-D.

mod common;

use std::time::Duration;

use common::tmux::{self, Tmux};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_user_session_in_the_repl() {
    if common::skip_unless(tmux::available(), "tmux (to drive the REPL in a terminal)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let saved = dir.path().join("saved.rhai");
    let command = format!(
        "{} repl --history {}",
        env!("CARGO_BIN_EXE_ragtune"),
        history.display()
    );
    let t = Tmux::start("repl", &command, dir.path());
    t.wait_for("rt> ", WAIT);

    // Open brackets keep the input going across lines; the value is printed.
    t.line("let config = #{");
    t.line("epochs: 3,");
    t.line("lr: 0.5 };");
    t.line("config.epochs * 2");
    let screen = t.wait_for("\n6\n", WAIT);
    assert!(!screen.contains("error"), "{screen}");

    // Tab completes a binding's name.
    t.type_text("load_enc");
    t.keys(&["Tab"]);
    t.wait_for("rt> load_encoder", WAIT);
    t.keys(&["C-u"]);

    // An error names the input, line and column, and shows the offending line.
    t.line("let broken = 1 +");
    t.line("  missing;");
    let screen = t.wait_for("Variable not found: missing", WAIT);
    assert!(
        screen.contains("<input 3>:2:3: Variable not found: missing"),
        "{screen}"
    );
    assert!(screen.contains("   2 |   missing"), "{screen}");

    // Ctrl-C stops a long call; the session and its variables live on, and the stopped input
    // leaves no half-made variables behind.
    t.line("let spins = 0; loop { spins += 1; }");
    std::thread::sleep(Duration::from_millis(1500));
    t.keys(&["C-c"]);
    t.wait_for("interrupted by the user", WAIT);
    t.line("config.lr == 0.5");
    t.wait_for("\ntrue\n", WAIT);
    t.line("spins");
    t.wait_for("Variable not found: spins", WAIT);

    // Ctrl-C during a long API call (training) stops it between steps with a checkpoint.
    let model = common::write_tiny_model(&dir.path().join("tiny"), 24);
    let apiary = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/data/apiary");
    t.line(&format!(
        "let long = train(\"{}\", training_pairs(load_beir(\"{}\", \"test\")), #{{output: \"{}\", max_steps: 100000, batch_size: 4}});",
        model.display(),
        apiary.display(),
        dir.path().join("long").display()
    ));
    t.wait_for("/100000 (", WAIT);
    t.keys(&["C-c"]);
    let screen = t.wait_for("training stopped after step", WAIT);
    assert!(
        screen.contains("(train again with resume to continue): interrupted by the user"),
        "{screen}"
    );
    assert!(dir.path().join("long/checkpoints").is_dir());

    // help() comes from the bindings' own docs.
    t.line("help(\"sample\")");
    t.wait_for("Example:", WAIT);

    // :save writes the successful inputs as a recipe that runs.
    t.line(&format!(":save {}", saved.display()));
    t.wait_for("saved ", WAIT);
    let recipe = std::fs::read_to_string(&saved).unwrap();
    assert!(
        recipe.contains("let config = #{\nepochs: 3,\nlr: 0.5 };"),
        "{recipe}"
    );
    assert!(
        !recipe.contains("missing"),
        "failed inputs are not saved: {recipe}"
    );
    let mut session = ragtune::script::Session::new();
    let value = session.eval(&recipe, "saved.rhai").unwrap();
    assert!(
        value.is_string(),
        "the last saved input is help(\"sample\")"
    );

    // Ctrl-D leaves; the history file holds the inputs.
    t.keys(&["C-d"]);
    let start = std::time::Instant::now();
    while t.running() && start.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!t.running(), "Ctrl-D should end the REPL");
    let history = std::fs::read_to_string(&history).unwrap();
    assert!(history.contains("config.epochs * 2"), "{history}");
}
