//! Progress bars for long work. One place decides how they look and when they are hidden.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr; invisible when disabled or when stderr is not a terminal.
pub struct Progress(ProgressBar);

impl Progress {
    pub fn new(total: u64, label: &str, enabled: bool) -> Self {
        let bar = if enabled {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        Self(bar)
    }

    /// A bar counting optimizer steps, whose message shows loss and learning rate.
    pub fn steps(total: u64, enabled: bool) -> Self {
        let bar = Self::new(total, "training", enabled);
        bar.0.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] step {pos}/{len} ({elapsed} elapsed, eta {eta})",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar
    }

    pub fn set_message(&self, message: String) {
        self.0.set_message(message);
    }

    pub fn set_position(&self, position: u64) {
        self.0.set_position(position);
    }

    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
