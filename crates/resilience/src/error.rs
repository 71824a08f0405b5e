//! The configuration error shared by every constructor of this crate.

use std::borrow::Cow;

/// A configuration value was rejected by a constructor.
///
/// Every constructor in this crate validates its input once and returns this error instead of
/// panicking. [`ConfigError::setting`] names the offending setting (for example
/// `"RetryConfig::max_attempts"`), and the `Display` text says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{setting}`: {reason}")]
pub struct ConfigError {
    setting: &'static str,
    reason: Cow<'static, str>,
}

impl ConfigError {
    /// Creates an error for `setting` explaining `reason`.
    pub fn new(setting: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }

    /// The name of the rejected setting, e.g. `"Backoff::exponential::multiplier"`.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// Why the value was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}
