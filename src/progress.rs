//! Progress bars for long work. One place decides how they look and where they go: a bar on
//! stderr in a terminal (hidden when stderr is not one), or, when a front end installs a
//! [`set_sink`] (the Jupyter kernel), a status line at most once a second plus a final one; the
//! sink learns which line is the final one, so it can redraw the others in place.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives a status line and whether it is the bar's last.
type Sink = Arc<dyn Fn(&str, bool) + Send + Sync>;

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Sends progress lines to `sink` instead of drawing bars (`None` restores the bars).
pub fn set_sink(sink: Option<Sink>) {
    *SINK.write().unwrap_or_else(|e| e.into_inner()) = sink;
}

fn current_sink() -> Option<Sink> {
    SINK.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// How often a sink gets a line while work goes on.
const SINK_EVERY: Duration = Duration::from_secs(1);

/// A progress bar on stderr, or status lines to the installed sink.
pub struct Progress {
    bar: ProgressBar,
    sink: Option<(Sink, Mutex<Instant>)>,
}

impl Progress {
    pub fn new(total: u64, label: &str, enabled: bool) -> Self {
        let sink = if enabled { current_sink() } else { None };
        let bar = if enabled && sink.is_none() {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        // A hidden bar still keeps position, length and message for the sink's lines.
        bar.set_length(total);
        bar.set_style(
            ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        Self {
            bar,
            sink: sink.map(|s| (s, Mutex::new(Instant::now()))),
        }
    }

    /// A bar counting optimizer steps, whose message shows loss and learning rate.
    pub fn steps(total: u64, enabled: bool) -> Self {
        let bar = Self::new(total, "training", enabled);
        bar.bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] step {pos}/{len} ({elapsed} elapsed, eta {eta})",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar
    }

    pub fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }

    /// A line on stderr above the bar (which a plain `eprintln!` would tear).
    pub fn println(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn set_position(&self, position: u64) {
        self.bar.set_position(position);
        self.report(false);
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.report(false);
    }

    pub fn finish(&self) {
        self.report(true);
        self.bar.finish_and_clear();
    }

    /// One status line to the sink, if one is installed and a second has passed (or `last`).
    fn report(&self, last: bool) {
        let Some((sink, at)) = &self.sink else { return };
        let mut at = at.lock().unwrap_or_else(|e| e.into_inner());
        let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
        // The final line is `finish`'s; a full bar before it would repeat it.
        if !last && (at.elapsed() < SINK_EVERY || pos >= len) {
            return;
        }
        *at = Instant::now();
        let elapsed = self.bar.elapsed().as_secs_f64();
        let eta = if last || pos == 0 {
            String::new()
        } else {
            format!(
                ", eta {:.0} s",
                elapsed / pos as f64 * len.saturating_sub(pos) as f64
            )
        };
        let line = format!(
            "{} {pos}/{len} ({elapsed:.0} s elapsed{eta})",
            self.bar.message()
        );
        sink(&line, last);
    }
}
