//! Configuration: `WS_*` environment variables over an optional TOML file.

pub mod settings;

pub use settings::{ConfigError, Settings, parse_duration};
