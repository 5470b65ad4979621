//! Configuration: `WS_*` environment variables over an optional TOML file,
//! and the catalog that documents every one of them (`catalog.rs`).

pub mod catalog;
pub mod server;
pub mod settings;

pub use server::{AuthSettings, LogFormat, ServerConfig, SourceKind};
pub use settings::{ConfigError, Settings, parse_duration};
