//! `completions SHELL` (clap_complete) and `manpage` (clap_mangen): generated from the same
//! clap definition as `--help`, so they cannot drift from the flags.

use std::io::Write as _;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManpageArgs};
use crate::error::Error;

/// `engati-etl completions bash|zsh|fish|elvish|powershell`: the script on stdout.
///
/// # Errors
/// [`Error::Output`] when stdout cannot be written.
pub fn completions(a: CompletionsArgs) -> Result<ExitCode, Error> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(a.shell, &mut cmd, "engati-etl", &mut out);
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `engati-etl manpage [--out-dir DIR]`: `engati-etl.1` on stdout, or it and one page per
/// subcommand (`engati-etl-run.1`, ...) written into DIR.
///
/// # Errors
/// [`Error::Output`] for I/O errors.
pub fn manpage(a: ManpageArgs) -> Result<ExitCode, Error> {
    let cmd = Cli::command();
    match a.out_dir {
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            out.flush()?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(cmd, &dir)?;
            crate::logging::notice(&format!(
                "engati-etl: man pages written to {}",
                dir.display()
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}
