//! Interrupting long work (what Ctrl-C in the REPL and a Jupyter interrupt do): a script loop
//! and a training run stop, the session lives on, and the interrupted run resumes to the weights
//! of an uninterrupted one. One test function, because the interrupt flag is process-wide.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use ragtune::interrupt;
use ragtune::script::Session;
use ragtune::train::{EmbedTrainer, LossConfig, LossName, TrainConfig, TrainingSet};
use ragtune::SentenceEncoder;

fn pairs(n: usize) -> TrainingSet {
    let w = common::WORDS;
    let text = |i: usize, salt: usize| {
        let tail = ["a", "b", "c", "d"][i % 4].repeat(1 + i / 4);
        format!(
            "{} {} {} {tail}",
            w[(i + salt) % w.len()],
            w[(i * 3 + salt) % w.len()],
            w[(i * 5 + 1) % w.len()]
        )
    };
    TrainingSet {
        columns: vec!["anchor".into(), "positive".into()],
        texts: vec![
            (0..n).map(|i| text(i, 0)).collect(),
            (0..n).map(|i| text(i, 7)).collect(),
        ],
        labels: None,
    }
}

fn train(
    model: &Path,
    output: &Path,
    resume: bool,
) -> anyhow::Result<ragtune::train::TrainOutcome> {
    let encoder = SentenceEncoder::load(model.to_str().unwrap(), &Default::default()).unwrap();
    EmbedTrainer {
        encoder: &encoder,
        data: &pairs(32),
        loss: LossConfig::named(LossName::Mnrl),
        config: TrainConfig {
            epochs: 40,
            batch_size: 8,
            lr: 1e-3,
            save_steps: 10_000,
            progress: false,
            ..Default::default()
        },
        dev: None,
    }
    .run(output, resume)
}

fn loss_lines(output: &Path) -> usize {
    std::fs::read_to_string(output.join("train_log.jsonl"))
        .map(|t| t.lines().filter(|l| l.contains("\"loss\"")).count())
        .unwrap_or(0)
}

#[test]
fn interrupts_stop_work_and_the_session_and_the_run_go_on() {
    // A script loop stops; the session keeps its variables and runs the next input.
    let mut session = Session::new();
    let _ = session.eval("let kept = 41;", "a").unwrap();
    let stopper = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(300));
        interrupt::request();
    });
    let err = session
        .eval("let n = 0;\nloop { n += 1; }", "b")
        .unwrap_err();
    stopper.join().unwrap();
    assert!(err.interrupted, "{err}");
    assert_eq!(err.message, "interrupted by the user");
    assert_eq!(session.eval("kept + 1", "c").unwrap().as_int().unwrap(), 42);

    // A training run stops between steps with a checkpoint, and resuming it reaches the weights
    // of a run that was never interrupted.
    let tmp = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(&tmp.path().join("model"), 24);
    let whole = tmp.path().join("whole");
    let stopped = tmp.path().join("stopped");
    let total = train(&model, &whole, false).unwrap().steps;

    let watched = stopped.clone();
    let stopper = std::thread::spawn(move || {
        let start = Instant::now();
        while loss_lines(&watched) < 5 && start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(1));
        }
        interrupt::request();
    });
    interrupt::clear();
    let err = train(&model, &stopped, false).unwrap_err();
    stopper.join().unwrap();
    assert!(interrupt::is_interrupt(&err), "{err:#}");
    let message = format!("{err:#}");
    assert!(message.contains("a checkpoint is in"), "{message}");
    let done = loss_lines(&stopped);
    assert!(
        done >= 5 && done < total,
        "stopped after {done} of {total} steps"
    );
    assert!(
        stopped.join(format!("checkpoints/step-{done}")).is_dir(),
        "{message}"
    );
    assert!(!stopped.join("model.safetensors").exists());

    interrupt::clear();
    let resumed = train(&model, &stopped, true).unwrap();
    assert_eq!(resumed.resumed_from, Some(done));
    let load = |dir: &Path| {
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap()
    };
    let (a, b) = (load(&whole), load(&stopped));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(common::max_abs_diff(t, &b[name]), 0.0, "{name}");
    }
}
