//! The AFL++ harness: `vsr-fuzz TARGET` runs the named target of `vsr_fuzz::TARGETS` on the
//! inputs AFL++ feeds it. Built with the `afl` feature by `cargo afl build`; run through
//! `scripts/fuzz.sh`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = vsr_fuzz::target(&name) else {
        let names: Vec<&str> = vsr_fuzz::TARGETS.iter().map(|target| target.name).collect();
        eprintln!(
            "usage: vsr-fuzz TARGET, where TARGET is one of {}",
            names.join(", ")
        );
        return ExitCode::FAILURE;
    };
    afl::fuzz!(|data: &[u8]| {
        (target.run)(data);
    });
    ExitCode::SUCCESS
}
