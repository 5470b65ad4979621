//! Configuration: `WS_*` environment variables over an optional TOML file,
//! and the catalog that documents every one of them (`catalog.rs`).

mod auth;
pub mod catalog;
pub(crate) mod delivery;
pub(crate) mod history;
pub mod publish;
pub mod server;
pub mod settings;

pub use publish::{PublishSettings, PublishVia};
pub use server::{AuthSettings, LogFormat, ServerConfig, SourceKind, TlsFiles};
pub use settings::{ConfigError, Settings, parse_duration};
