//! `ragtune repl [--history FILE]`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ReplArgs {
    /// History file (default: $XDG_DATA_HOME/ragtune/history, else ~/.local/share/ragtune/history).
    #[arg(long)]
    history: Option<PathBuf>,
}

pub fn run(args: ReplArgs) -> Result<()> {
    let history = args
        .history
        .unwrap_or_else(ragtune::repl::default_history_path);
    ragtune::repl::run(&history)
}
