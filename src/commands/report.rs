//! `report (PIPELINE.toml | --out DIR) --html FILE`: one self-contained HTML page about an
//! output (see [`crate::report_html`]).

use std::process::ExitCode;

use crate::cli::ReportArgs;
use crate::error::Error;

/// `engati-etl report ... --html FILE`.
///
/// # Errors
/// [`Error::Usage`] without a target; state and I/O errors.
pub fn report(a: ReportArgs) -> Result<ExitCode, Error> {
    let (out_dir, state_dir, _shard) = super::state::locate(&a.target)?;
    let page = crate::report_html::build(&out_dir, &state_dir, a.runs)?;
    std::fs::write(&a.html, page)?;
    crate::logging::notice(&format!(
        "engati-etl: report written to {}",
        a.html.display()
    ));
    Ok(ExitCode::SUCCESS)
}
