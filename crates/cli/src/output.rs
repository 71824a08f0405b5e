//! How `bench` and `health` print their report: one JSON object (`--json`) or the human summary.

use serde::Serialize;

use crate::error::CliError;

/// Prints `report` as one JSON line when `json`, else `human()`.
pub(crate) fn print_report<R: Serialize>(
    report: &R,
    json: bool,
    human: impl FnOnce() -> String,
) -> Result<(), CliError> {
    if json {
        let json = serde_json::to_string(report)
            .map_err(|err| CliError::runtime(format!("cannot encode the report: {err}")))?;
        println!("{json}");
    } else {
        println!("{}", human());
    }
    Ok(())
}
