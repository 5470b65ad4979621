//! Configuration: `WS_*` environment variables over an optional TOML file.

pub mod server;
pub mod settings;
pub mod sources;

pub use server::{AuthSettings, LogFormat, ServerConfig, SourceKind, TlsFiles};
pub use settings::{ConfigError, Settings, parse_duration};
pub use sources::build_sources;
