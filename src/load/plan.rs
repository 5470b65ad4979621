//! Turns the command line into a checked plan: resolved targets (loopback
//! only unless `--allow-remote`), channel names, source addresses, the
//! publisher's settings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::load::LoadError;
use crate::load::args::{LoadArgs, PublishVia};

/// Where to open a WebSocket or send an HTTP request.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The resolved address (the first the name resolved to).
    pub address: SocketAddr,
    /// The `Host` header: the URL's authority as written.
    pub host: String,
    /// Path and query of the request line.
    pub path_and_query: String,
}

/// How the publisher reaches the server.
#[derive(Debug, Clone)]
pub enum PublishTarget {
    /// `POST` to this endpoint with this API key.
    Http {
        /// The publish endpoint.
        endpoint: Endpoint,
        /// Sent as `X-API-Key`.
        api_key: String,
    },
    /// Produce to this topic.
    Kafka {
        /// Bootstrap servers as given.
        brokers: String,
        /// The topic, which is also the channel.
        topic: String,
    },
}

/// How subscribers authenticate.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// The same token for every connection.
    Token(String),
    /// Mint `sub = load-{i}` per connection with this HS256 secret.
    Secret(Vec<u8>),
}

/// A checked run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The WebSocket endpoint.
    pub ws: Endpoint,
    /// Subscriber connections.
    pub connections: usize,
    /// Channel names; connection i takes `channels[i % len]`.
    pub channels: Vec<String>,
    /// Token source.
    pub credentials: Credentials,
    /// `None` for `--idle`.
    pub publish: Option<PublishTarget>,
    /// Source addresses to bind, in turn; empty for the kernel's choice.
    pub source_ips: Vec<IpAddr>,
}

impl Plan {
    /// Checks `args`, resolving names, and refuses non-loopback targets unless
    /// `--allow-remote` is set.
    pub async fn from_args(args: &LoadArgs) -> Result<Plan, LoadError> {
        if args.connections == 0 {
            return Err(LoadError::invalid("--connections must be at least 1"));
        }
        if args.publish_concurrency == 0 {
            return Err(LoadError::invalid(
                "--publish-concurrency must be at least 1",
            ));
        }
        if args.duration.is_zero() {
            return Err(LoadError::invalid("--duration must be longer than 0"));
        }
        let channels = args.channel_names();
        if channels.is_empty() || channels.iter().any(|c| c.trim().is_empty()) {
            return Err(LoadError::invalid("channel names must not be empty"));
        }
        let ws = endpoint(&args.url, &["ws"], "--url", args.allow_remote).await?;
        let credentials = match (&args.token, &args.secret) {
            (Some(token), _) => Credentials::Token(token.clone()),
            (None, Some(secret)) => Credentials::Secret(secret.as_bytes().to_vec()),
            (None, None) => {
                return Err(LoadError::invalid(
                    "give --token T (one token for all) or --secret S (mint one per connection)",
                ));
            }
        };
        let publish = if args.idle {
            None
        } else {
            Some(publish_target(args, &channels).await?)
        };
        let source_ips = match &args.source_ips {
            None => Vec::new(),
            Some(raw) => parse_source_ips(raw)?,
        };
        if let Some(bad) = source_ips
            .iter()
            .find(|ip| ip.is_ipv4() != ws.address.is_ipv4())
        {
            return Err(LoadError::invalid(format!(
                "--source-ips: {bad} is not of the same IP version as the target {}",
                ws.address
            )));
        }
        Ok(Plan {
            ws,
            connections: args.connections,
            channels,
            credentials,
            publish,
            source_ips,
        })
    }
}

async fn publish_target(args: &LoadArgs, channels: &[String]) -> Result<PublishTarget, LoadError> {
    match args.publish_via {
        PublishVia::Http => {
            let url = args.publish_url.as_deref().ok_or_else(|| {
                LoadError::invalid(
                    "give --publish-url http://HOST:PORT/api/publish (or --idle for no publishing)",
                )
            })?;
            let api_key = args.api_key.clone().ok_or_else(|| {
                LoadError::invalid("give --api-key, the server's WS_API_KEY, to publish over HTTP")
            })?;
            let endpoint = endpoint(url, &["http"], "--publish-url", args.allow_remote).await?;
            Ok(PublishTarget::Http { endpoint, api_key })
        }
        PublishVia::Kafka => {
            let (Some(brokers), Some(topic)) = (&args.brokers, &args.topic) else {
                return Err(LoadError::invalid(
                    "--publish-via kafka needs --brokers HOST:PORT and --topic T",
                ));
            };
            if channels != std::slice::from_ref(topic) {
                return Err(LoadError::invalid(format!(
                    "with --publish-via kafka every message reaches channel {topic:?} (the topic, \
                     under the default routing); drop --channels/--channel-count"
                )));
            }
            for broker in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
                let address = resolve(broker, "--brokers").await?;
                check_loopback(address, "--brokers", args.allow_remote)?;
            }
            Ok(PublishTarget::Kafka {
                brokers: brokers.clone(),
                topic: topic.clone(),
            })
        }
    }
}

/// Parses `scheme://host[:port]/path?query`, resolves the host and checks it.
async fn endpoint(
    url: &str,
    schemes: &[&str],
    flag: &str,
    allow_remote: bool,
) -> Result<Endpoint, LoadError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| LoadError::invalid(format!("{flag} {url:?} is not a URL: {e}")))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if !schemes.contains(&scheme) {
        let hint = if scheme == "wss" || scheme == "https" {
            " (TLS is not supported: run the tool where it can reach the server without TLS)"
        } else {
            ""
        };
        return Err(LoadError::invalid(format!(
            "{flag} {url:?} must start with {}://{hint}",
            schemes.join(":// or ")
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| LoadError::invalid(format!("{flag} {url:?} has no host")))?;
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let address = resolve(&format!("{host}:{port}"), flag)
        .await
        .or_else(|_| {
            // An IPv6 literal needs its brackets to resolve as host:port.
            host.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, port))
                .map_err(|_| LoadError::invalid(format!("{flag}: cannot resolve {host}")))
        })?;
    check_loopback(address, flag, allow_remote)?;
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    Ok(Endpoint {
        address,
        host: authority.as_str().to_owned(),
        path_and_query,
    })
}

async fn resolve(host_port: &str, flag: &str) -> Result<SocketAddr, LoadError> {
    tokio::net::lookup_host(host_port)
        .await
        .map_err(|e| LoadError::invalid(format!("{flag}: cannot resolve {host_port}: {e}")))?
        .next()
        .ok_or_else(|| LoadError::invalid(format!("{flag}: {host_port} resolves to nothing")))
}

/// Refuses `address` unless it is loopback or remote targets are allowed.
pub fn check_loopback(
    address: SocketAddr,
    flag: &str,
    allow_remote: bool,
) -> Result<(), LoadError> {
    if allow_remote || address.ip().is_loopback() {
        return Ok(());
    }
    Err(LoadError::RemoteTarget {
        flag: flag.to_owned(),
        address,
    })
}

/// `A-B` (an IPv4 range, both ends included) or `A,B,…`.
pub fn parse_source_ips(raw: &str) -> Result<Vec<IpAddr>, LoadError> {
    let bad = |detail: String| {
        LoadError::invalid(format!(
            "--source-ips {raw:?}: {detail}; expected A-B (IPv4 range) or A,B,…"
        ))
    };
    let raw = raw.trim();
    if let Some((first, last)) = raw.split_once('-') {
        let first: Ipv4Addr = first.trim().parse().map_err(|e| bad(format!("{e}")))?;
        let last: Ipv4Addr = last.trim().parse().map_err(|e| bad(format!("{e}")))?;
        let (first, last) = (u32::from(first), u32::from(last));
        if last < first {
            return Err(bad("the range ends before it starts".to_owned()));
        }
        if last - first >= 65_536 {
            return Err(bad("more than 65 536 addresses".to_owned()));
        }
        return Ok((first..=last)
            .map(|ip| IpAddr::V4(Ipv4Addr::from(ip)))
            .collect());
    }
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<IpAddr>().map_err(|e| bad(format!("{s}: {e}"))))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|ips| {
            if ips.is_empty() {
                Err(bad("no address".to_owned()))
            } else {
                Ok(ips)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> LoadArgs {
        let mut all = vec!["load", "--token", "t"];
        all.extend_from_slice(extra);
        LoadArgs::try_parse_from(all).unwrap()
    }

    #[test]
    fn source_ip_ranges_expand_inclusively() {
        let ips = parse_source_ips("127.0.0.1-127.0.0.20").unwrap();
        assert_eq!(ips.len(), 20);
        assert_eq!(ips[0], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(ips[19], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 20)));
        assert_eq!(parse_source_ips("127.0.0.2, 127.0.0.3").unwrap().len(), 2);
        assert!(parse_source_ips("127.0.0.9-127.0.0.1").is_err());
        assert!(parse_source_ips("nonsense").is_err());
    }

    #[tokio::test]
    async fn non_loopback_targets_are_refused_without_allow_remote() {
        let refused = Plan::from_args(&args(&["--url", "ws://10.1.2.3:8080/ws", "--idle"])).await;
        assert!(
            matches!(refused, Err(LoadError::RemoteTarget { .. })),
            "{refused:?}"
        );
        let allowed = Plan::from_args(&args(&[
            "--url",
            "ws://10.1.2.3:8080/ws",
            "--idle",
            "--allow-remote",
        ]))
        .await
        .unwrap();
        assert_eq!(allowed.ws.address, "10.1.2.3:8080".parse().unwrap());
        assert_eq!(allowed.ws.path_and_query, "/ws");
    }

    #[tokio::test]
    async fn a_remote_publish_url_is_refused_too() {
        let refused = Plan::from_args(&args(&[
            "--url",
            "ws://127.0.0.1:8080/ws",
            "--publish-url",
            "http://192.0.2.1/api/publish",
            "--api-key",
            "k",
        ]))
        .await;
        assert!(
            matches!(refused, Err(LoadError::RemoteTarget { ref flag, .. }) if flag == "--publish-url"),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn publishing_needs_a_url_and_key_unless_idle() {
        let missing = Plan::from_args(&args(&["--url", "ws://127.0.0.1:8080/ws"])).await;
        assert!(matches!(missing, Err(LoadError::InvalidArgument(_))));
        let idle = Plan::from_args(&args(&["--url", "ws://127.0.0.1:8080/ws", "--idle"]))
            .await
            .unwrap();
        assert!(idle.publish.is_none());
    }

    #[tokio::test]
    async fn tls_urls_are_refused_with_a_reason() {
        let refused = Plan::from_args(&args(&["--url", "wss://127.0.0.1/ws", "--idle"])).await;
        match refused {
            Err(LoadError::InvalidArgument(message)) => {
                assert!(message.contains("TLS"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
