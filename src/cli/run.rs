//! `ragtune run SCRIPT.rhai [--set key=value …]`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use ragtune::script::Session;

#[derive(Args)]
pub struct RunArgs {
    /// The Rhai script to run.
    script: PathBuf,
    /// Define a script variable before the run (repeatable): numbers and booleans keep their type.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

pub fn run(args: RunArgs) -> Result<()> {
    let mut session = Session::new();
    for pair in &args.set {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--set `{pair}`: expected KEY=VALUE");
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_alphanumeric() || c == '_') {
            bail!("--set `{pair}`: `{key}` is not a valid variable name");
        }
        session.set_var(key, Session::parse_value(value));
    }
    let _ = session.run_file(&args.script)?;
    Ok(())
}
