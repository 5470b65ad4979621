//! Command-line interface of the `ws-realtime` binary.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Live market data from Kafka, Redis and HTTP to authenticated WebSocket clients.
#[derive(Debug, Parser)]
#[command(name = "ws-realtime", version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (configuration from WS_* variables over an optional TOML file).
    Serve {
        /// TOML configuration file; environment variables win over it.
        #[arg(long, short = 'c', env = "WS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run a local server with a synthetic market feed, a dev secret and API key.
    Dev,
    /// Print an HS256 token.
    Token {
        /// The HS256 secret the server uses.
        #[arg(long)]
        secret: String,
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. 30m, 1h, 24h.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        /// A role (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Allowed channel patterns, comma separated (e.g. lines,trade:*).
        #[arg(long, value_delimiter = ',')]
        channels: Option<Vec<String>>,
        /// Audience (`aud`).
        #[arg(long)]
        aud: Option<String>,
        /// Issuer (`iss`).
        #[arg(long)]
        iss: Option<String>,
    },
    /// Validate the configuration and exit (0 when valid, 2 with the problem otherwise).
    CheckConfig {
        /// TOML configuration file; environment variables win over it.
        #[arg(long, short = 'c', env = "WS_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn parse_ttl(raw: &str) -> Result<Duration, String> {
    ws_realtime::config::parse_duration(raw)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{raw:?} is not a duration such as 30m, 1h or 3600s"))
}
