//! Driving a terminal program as a user would: tmux runs it in a pseudo-terminal, keys go in with
//! `send-keys`, and what the screen shows comes back with `capture-pane`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A program running in its own tmux server (a private socket, so tests never touch a user's).
pub struct Tmux {
    socket: String,
}

pub fn available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Tmux {
    /// Starts `command` (a shell command line) in a 160×50 pane.
    pub fn start(name: &str, command: &str, cwd: &Path) -> Self {
        let socket = format!("ragtune-{name}-{}", std::process::id());
        let t = Self { socket };
        t.tmux(&[
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            "160",
            "-y",
            "50",
            "-c",
        ])
        .arg(cwd)
        .arg(command)
        .status()
        .expect("tmux new-session");
        t
    }

    fn tmux(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).args(args);
        // CI runs without a terminal; tmux still wants to know which one to emulate.
        if std::env::var_os("TERM").is_none_or(|t| t.is_empty() || t == "dumb") {
            c.env("TERM", "xterm-256color");
        }
        c
    }

    /// Types `text` literally (no key names), without Enter.
    pub fn type_text(&self, text: &str) {
        // tmux reads a trailing `;` as a command separator, even with -l; send it on its own.
        let (body, semicolon) = match text.strip_suffix(';') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if !body.is_empty() {
            self.tmux(&["send-keys", "-t", "main", "-l", body])
                .status()
                .unwrap();
        }
        if semicolon {
            self.tmux(&["send-keys", "-t", "main", "\\;"])
                .status()
                .unwrap();
        }
    }

    /// Presses keys by name: "Enter", "Tab", "C-c", "C-d".
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        self.tmux(&args).status().unwrap();
    }

    /// Types a line and presses Enter.
    pub fn line(&self, text: &str) {
        self.type_text(text);
        self.keys(&["Enter"]);
    }

    /// Pastes text as a modern terminal delivers it: as a bracketed paste (newlines included)
    /// when the program asked for one, as rustyline does.
    pub fn paste(&self, text: &str) {
        let mut load = self.tmux(&["load-buffer", "-"]);
        load.stdin(std::process::Stdio::piped());
        let mut child = load.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait().unwrap();
        self.tmux(&["paste-buffer", "-p", "-t", "main"])
            .status()
            .unwrap();
    }

    /// The screen and its scrollback, as text.
    pub fn screen(&self) -> String {
        let out = self
            .tmux(&["capture-pane", "-p", "-J", "-S", "-2000", "-t", "main"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text` `times` times; panics with the screen after `timeout`.
    pub fn wait_for_count(&self, text: &str, times: usize, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            if start.elapsed() > timeout {
                panic!("the screen never showed {text:?} ({times}x) within {timeout:?}:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_for(&self, text: &str, timeout: Duration) -> String {
        self.wait_for_count(text, 1, timeout)
    }

    /// Whether the program in the pane is still running.
    pub fn running(&self) -> bool {
        self.tmux(&["has-session", "-t", "main"])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]).output();
    }
}
