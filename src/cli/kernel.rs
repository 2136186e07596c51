//! `ragtune kernel --connection-file F` (what Jupyter runs) and `ragtune kernel install`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use ragtune::kernel::install::{self, Target};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KernelArgs {
    #[command(subcommand)]
    command: Option<KernelCommand>,
    /// The connection file Jupyter writes (ports and signing key); Jupyter passes it.
    #[arg(long, short = 'f')]
    connection_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum KernelCommand {
    /// Install the kernelspec so Jupyter lists the "ragtune (Rhai)" kernel.
    Install {
        /// Into the user's Jupyter folder (the default).
        #[arg(long, conflicts_with = "prefix")]
        user: bool,
        /// Into PREFIX/share/jupyter (e.g. a virtual environment's folder).
        #[arg(long)]
        prefix: Option<PathBuf>,
    },
}

pub fn run(args: KernelArgs) -> Result<()> {
    match (args.command, args.connection_file) {
        (Some(KernelCommand::Install { prefix, .. }), _) => {
            let target = prefix.map_or(Target::User, Target::Prefix);
            let dir = install::install(&target)?;
            println!("installed the ragtune kernelspec in {}", dir.display());
            Ok(())
        }
        (None, Some(file)) => ragtune::kernel::run(&file),
        (None, None) => anyhow::bail!(
            "ragtune kernel: pass --connection-file FILE (Jupyter does this), or `ragtune kernel install`"
        ),
    }
}
