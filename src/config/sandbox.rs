//! `[sandbox]`: run a pipeline against the embedded Engati-compatible sandbox (and, with
//! `hubspot = true`, the HubSpot emulator) instead of a real API. Validates into a
//! [`SandboxConfig`].

use serde::Deserialize;

use super::ConfigError;
use crate::sandbox::{DataConfig, FaultConfig, SandboxConfig};
use crate::time::{DAY_MS, parse_user_instant};

/// `[sandbox]`: start the embedded Engati-compatible sandbox and export from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    /// Use the sandbox. Default true when the section is present.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Data seed. Default 42.
    pub seed: Option<u64>,
    /// Number of users. Default 50.
    pub users: Option<usize>,
    /// First day of data (`YYYY-MM-DD`). Default 2026-08-01.
    #[serde(default, deserialize_with = "super::values::date_text")]
    pub start: Option<String>,
    /// Days of data. Default 31.
    pub days: Option<u32>,
    /// Average sessions per user. Default 6.
    pub sessions_per_user: Option<f64>,
    /// Added latency per response, ms. Default 0.
    pub latency_ms: Option<u64>,
    /// Share of 500 responses. Default 0.
    pub fail_rate: Option<f64>,
    /// Share of 429 responses. Default 0.
    pub throttle_rate: Option<f64>,
    /// Share of truncated 200 bodies. Default 0.
    pub truncate_rate: Option<f64>,
    /// Share of messages with a garbage timestamp. Default 0.
    pub malformed_rate: Option<f64>,
    /// Read `end_date` as inclusive. Default false.
    pub end_inclusive: Option<bool>,
    /// Read `start_date` as exclusive. Default false.
    pub start_exclusive: Option<bool>,
    /// Also start the HubSpot emulator and send the transcripts there (`format = "crm"`,
    /// `crm = "hubspot"`). Default false.
    pub hubspot: Option<bool>,
}

fn yes() -> bool {
    true
}

impl SandboxSection {
    /// True when the HubSpot emulator is asked for too.
    pub fn with_hubspot(&self) -> bool {
        self.enabled && self.hubspot == Some(true)
    }

    /// The sandbox's settings.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a bad `start` date or a rate outside 0..=1.
    pub fn config(&self) -> Result<SandboxConfig, ConfigError> {
        let d = DataConfig::default();
        let start_ms = match &self.start {
            Some(v) => parse_user_instant(v, 0)
                .map_err(|e| ConfigError::invalid(format!("sandbox.start: {e}")))?,
            None => d.start_ms,
        };
        for (key, v) in [
            ("fail_rate", self.fail_rate),
            ("throttle_rate", self.throttle_rate),
            ("truncate_rate", self.truncate_rate),
            ("malformed_rate", self.malformed_rate),
        ] {
            if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                return Err(ConfigError::invalid(format!(
                    "sandbox.{key} {v} must be between 0 and 1"
                )));
            }
        }
        Ok(SandboxConfig {
            data: DataConfig {
                seed: self.seed.unwrap_or(d.seed),
                users: self.users.unwrap_or(d.users),
                start_ms: start_ms.div_euclid(DAY_MS) * DAY_MS,
                days: self.days.unwrap_or(d.days),
                sessions_per_user: self.sessions_per_user.unwrap_or(d.sessions_per_user),
                malformed_rate: self.malformed_rate.unwrap_or(0.0),
                ..d
            },
            faults: FaultConfig {
                latency_ms: self.latency_ms.unwrap_or(0),
                fail_rate: self.fail_rate.unwrap_or(0.0),
                throttle_rate: self.throttle_rate.unwrap_or(0.0),
                truncate_rate: self.truncate_rate.unwrap_or(0.0),
                ..FaultConfig::default()
            },
            end_inclusive: self.end_inclusive.unwrap_or(false),
            start_exclusive: self.start_exclusive.unwrap_or(false),
            ..SandboxConfig::default()
        })
    }
}
