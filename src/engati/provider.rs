//! Provider presets: the brands that sell the same API on other hosts (docs/engati-api.md, "Brands").

use std::fmt;
use std::str::FromStr;

/// A brand of the Engati API.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// `https://api.engati.ai/` (current).
    Engati,
    /// `https://api.engati.com/` (older docs).
    EngatiCom,
    /// `https://api.alertspanel.com/`.
    Alertspanel,
    /// `https://api.floatchat.ai/`.
    Floatchat,
    /// Host unknown: `base_url` is required.
    Technowiz,
    /// Any `base_url` (other resellers, the sandbox).
    Custom,
}

impl Provider {
    /// All providers, for help texts.
    pub const ALL: [Provider; 6] = [
        Provider::Engati,
        Provider::EngatiCom,
        Provider::Alertspanel,
        Provider::Floatchat,
        Provider::Technowiz,
        Provider::Custom,
    ];

    /// The preset base URL; `None` for `technowiz` and `custom`, which need `base_url`.
    pub fn base_url(self) -> Option<&'static str> {
        match self {
            Provider::Engati => Some("https://api.engati.ai/"),
            Provider::EngatiCom => Some("https://api.engati.com/"),
            Provider::Alertspanel => Some("https://api.alertspanel.com/"),
            Provider::Floatchat => Some("https://api.floatchat.ai/"),
            Provider::Technowiz | Provider::Custom => None,
        }
    }

    /// The name used in flags, files and the `provider` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Engati => "engati",
            Provider::EngatiCom => "engati-com",
            Provider::Alertspanel => "alertspanel",
            Provider::Floatchat => "floatchat",
            Provider::Technowiz => "technowiz",
            Provider::Custom => "custom",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown provider `{s}`: use one of {}",
                    Provider::ALL.map(|p| p.as_str()).join(", ")
                )
            })
    }
}
