//! The `[telemetry]` section of the configuration.

use serde::Deserialize;

/// How log lines are written to standard error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines with colours, for a developer's terminal.
    Pretty,
    /// `Pretty` when standard error is a terminal, `Json` otherwise.
    #[default]
    Auto,
}

/// Telemetry settings shared by every service.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// Output format of log lines.
    pub log_format: LogFormat,
    /// `EnvFilter` directive such as `info,cuttle_store=debug`; `RUST_LOG` wins when set.
    pub log_level: String,
    /// Base URL of an OTLP/HTTP collector (e.g. `http://127.0.0.1:4318`); no export when unset.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            log_level: "info".to_owned(),
            otlp_endpoint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_their_defaults() {
        let config: TelemetryConfig = serde_json::from_str(r#"{"log_format":"json"}"#).unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.log_level, "info");
        assert_eq!(config.otlp_endpoint, None);
        assert_eq!(
            serde_json::from_str::<TelemetryConfig>("{}").unwrap(),
            TelemetryConfig::default()
        );
    }

    #[test]
    fn log_formats_are_spelled_in_snake_case() {
        let pretty: LogFormat = serde_json::from_str(r#""pretty""#).unwrap();
        let auto: LogFormat = serde_json::from_str(r#""auto""#).unwrap();
        assert_eq!((pretty, auto), (LogFormat::Pretty, LogFormat::Auto));
        assert!(serde_json::from_str::<LogFormat>(r#""Pretty""#).is_err());
    }
}
