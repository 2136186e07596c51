//! The Jupyter kernel tested with a real Jupyter client: tests/kernel/test_kernel.py drives
//! `ragtune kernel` through jupyter_client and nbclient (outputs, errors, completion, interrupt,
//! a forged message, shutdown) and, where SciFact and the real model are at hand, executes
//! examples/embeddings.ipynb end to end, and examples/pipeline.ipynb with quick settings.
//!
//! Python comes from `RAGTUNE_PYTHON` (CI points it at a venv with jupyter_client, nbclient and
//! nbformat), else `python3`.

mod common;

use std::path::Path;
use std::process::Command;

fn has_jupyter_client() -> bool {
    Command::new(common::python())
        .args(["-c", "import jupyter_client, nbclient, nbformat"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_real_jupyter_client_drives_the_kernel() {
    if common::skip_unless(
        has_jupyter_client(),
        "python with jupyter_client, nbclient and nbformat",
    ) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(common::python());
    command
        .arg(root.join("tests/kernel/test_kernel.py"))
        .env("RAGTUNE_BIN", env!("CARGO_BIN_EXE_ragtune"))
        .env("RAGTUNE_APIARY", root.join("recipes/data/apiary"))
        .env("HF_HUB_OFFLINE", "1");
    let scifact = common::shared_dir().map(|d| d.join("datasets/scifact"));
    match scifact {
        Some(dir) if dir.is_dir() && common::minilm_seeded() => {
            command
                .env("RAGTUNE_NOTEBOOK", root.join("examples/embeddings.ipynb"))
                .env("SCIFACT_DIR", dir);
        }
        _ => {
            common::skip_unless(
                false,
                "SciFact and the seeded MiniLM (to execute examples/embeddings.ipynb)",
            );
        }
    }
    if !common::skip_unless(
        common::minilm_seeded() && common::smollm2_seeded(),
        "the seeded MiniLM and SmolLM2 (to execute examples/pipeline.ipynb)",
    ) {
        command.env(
            "RAGTUNE_PIPELINE_NOTEBOOK",
            root.join("examples/pipeline.ipynb"),
        );
    }
    let out = command
        .output()
        .expect("running tests/kernel/test_kernel.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "kernel checks failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains("all kernel checks passed"), "{stdout}");
}
