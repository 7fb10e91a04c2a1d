//! `edge`: the daemon, the thin client that talks to it, and the standalone tools (attach
//! without a daemon, replay a capture, check a policy). Exit codes: 0 ok, 1 error, 2 usage.
//!
//! Rooms: `args` (the command line), `remote` (commands that call the daemon's API),
//! `render` (how their answers print), `offline` (status and stats from the pins when the
//! daemon is down), `local` (commands that need no daemon), `token` (`edge token verify`).

/// `println!` that returns the write's error instead of panicking, so a closed pipe
/// (`edge visitors list | head -1`) ends the command quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

mod args;
mod local;
mod offline;
mod remote;
mod render;
mod token;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let result = match cli.command {
        command @ (args::Command::Status { .. }
        | args::Command::Mode { .. }
        | args::Command::Visitors(_)
        | args::Command::Allow(_)
        | args::Command::Deny(_)
        | args::Command::Window(_)
        | args::Command::Config(_)
        | args::Command::Fleet(_)
        | args::Command::Stats { .. }
        | args::Command::Top { .. }) => remote::run(&cli.connection, command),
        command => local::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Whether the command failed only because its reader went away (`| head`): not an error.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
