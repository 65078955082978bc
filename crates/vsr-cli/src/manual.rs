//! `vsr completions` and `vsr man`: shell completions (`clap_complete`) and manual pages
//! (`clap_mangen`), both generated from the parser's own definitions, so they list exactly the
//! subcommands and flags the binary takes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Command};
use clap_complete::Shell;

/// Options of `vsr completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for. For example, bash: `vsr completions bash >
    /// /usr/share/bash-completion/completions/vsr`.
    #[arg(value_enum)]
    shell: Shell,
}

/// Options of `vsr man`.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write `vsr.1` and one `vsr-SUBCOMMAND.1` per subcommand into DIR (created if missing)
    /// instead of printing the top-level page.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Prints the completion script of `command` for the chosen shell.
pub(crate) fn completions(
    args: &CompletionsArgs,
    mut command: Command,
) -> anyhow::Result<ExitCode> {
    let name = command.get_name().to_owned();
    // Into memory first: the generator panics on a failed write.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    print(&script)
}

/// Prints the top-level manual page of `command`, or writes every page into `--out`.
pub(crate) fn man(args: &ManArgs, command: Command) -> anyhow::Result<ExitCode> {
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            return print(&page);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}
