//! The binary's error: what ended a command, with its exit code (README, "Exit codes"). Every
//! command returns `Result<ExitCode, Error>`; `main` prints the error once, on stderr.

use crate::config::ConfigError;
use crate::pipeline::RunError;
use crate::sink::SinkError;
use crate::state::StateError;

/// What ended a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Usage or configuration (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A run's failure (its own exit code: 2-7).
    #[error(transparent)]
    Run(#[from] RunError),
    /// The state store (exit 2 when locked by another run, else 6).
    #[error(transparent)]
    State(#[from] StateError),
    /// A usage error found by a command (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A `send` command's failure, with its exit code (README, "Send").
    #[error("{message}")]
    Send {
        /// The exit code.
        code: u8,
        /// What went wrong.
        message: String,
    },
    /// Writing a command's output (exit 6; a closed pipe is not an error).
    #[error("writing to stdout: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Usage(_) => 2,
            Error::Run(e) => e.exit_code(),
            Error::State(StateError::Locked(_)) => 2,
            Error::State(_) => 6,
            Error::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
            Error::Output(_) => 6,
            Error::Send { code, .. } => *code,
        }
    }

    /// True when the error needs no message: the reader closed the pipe (`| head`).
    pub fn is_silent(&self) -> bool {
        matches!(self, Error::Run(RunError::Sink(SinkError::OutputClosed)))
            || matches!(self, Error::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}
