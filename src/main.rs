//! The `paywatch` binary: parse the command line, run, exit with 0, 1 (runtime) or 2 (usage/config).

use clap::Parser;
use paywatch::cli::{Cli, run};

/// mimalloc instead of glibc's allocator: request handling allocates many small short-lived
/// buffers, and glibc's free-list upkeep was ~14% of a create's CPU in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("paywatch: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(f) = runtime.block_on(run(cli)) {
        eprintln!("paywatch: {}", f.message);
        std::process::exit(f.code);
    }
}
