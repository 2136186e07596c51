//! The `ragtune` command line: parses arguments and calls the library. See `ragtune --help`.

mod cli;

fn main() {
    ragtune::runtime::tune_allocator();
    ragtune::runtime::flush_denormals();
    if let Err(e) = cli::main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
