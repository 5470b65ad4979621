//! Tests of the server settings: defaults, every variable's validation and
//! its error naming the variable.

use super::*;

fn config(pairs: &[(&str, &str)]) -> Result<ServerConfig, ConfigError> {
    let mut all = vec![
        ("WS_AUTH_SECRET", "0123456789abcdef0123456789abcdef"),
        ("WS_SOURCES", "http"),
        ("WS_API_KEY", "k"),
    ];
    all.extend_from_slice(pairs);
    ServerConfig::from_settings(&Settings::from_pairs(all))
}

#[test]
fn the_live_page_is_off_unless_ws_ui_turns_it_on_and_never_carries_a_token() {
    let off = config(&[]).unwrap();
    assert!(!off.ui);
    let on = config(&[("WS_UI", "true")]).unwrap();
    assert!(on.ui);
    assert_eq!(
        on.ui_token, None,
        "serve never writes a token into the page"
    );
}

#[test]
fn bind_address_accepts_every_documented_form() {
    assert_eq!(
        parse_bind_address(":8080"),
        Some("0.0.0.0:8080".parse().unwrap())
    );
    assert_eq!(
        parse_bind_address("0.0.0.0:8080"),
        Some("0.0.0.0:8080".parse().unwrap())
    );
    assert_eq!(
        parse_bind_address("127.0.0.1:9000"),
        Some("127.0.0.1:9000".parse().unwrap())
    );
    assert_eq!(
        parse_bind_address("[::]:8080"),
        Some("[::]:8080".parse().unwrap())
    );
    assert_eq!(parse_bind_address("localhost"), None);
    assert_eq!(parse_bind_address(":http"), None);
}

#[test]
fn a_client_buffer_smaller_than_the_rate_burst_draws_a_warning() {
    let small = config(&[("WS_CLIENT_BUFFER", "16"), ("WS_RATE_BURST", "100")]).unwrap();
    let warnings = small.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("WS_CLIENT_BUFFER") && w.contains("WS_RATE_BURST")),
        "{warnings:?}"
    );
    assert!(config(&[]).unwrap().warnings().is_empty());
}

#[test]
fn hostile_client_limits_are_read_and_checked() {
    let c = config(&[]).unwrap();
    assert_eq!(c.max_request_head_bytes, 16 * 1024);
    assert_eq!(c.socket_send_buffer, 256 * 1024);
    assert_eq!(c.listen_backlog, system_somaxconn());
    let set = config(&[
        ("WS_MAX_REQUEST_HEAD_BYTES", "4096"),
        ("WS_SOCKET_SEND_BUFFER", "0"),
        ("WS_LISTEN_BACKLOG", "65535"),
    ])
    .unwrap();
    assert_eq!(
        (
            set.max_request_head_bytes,
            set.socket_send_buffer,
            set.listen_backlog
        ),
        (4096, 0, 65535)
    );
    for (name, value) in [
        ("WS_MAX_REQUEST_HEAD_BYTES", "100"),
        ("WS_MAX_REQUEST_HEAD_BYTES", "lots"),
        ("WS_SOCKET_SEND_BUFFER", "100"),
        ("WS_LISTEN_BACKLOG", "0"),
    ] {
        let error = config(&[(name, value)]).unwrap_err().to_string();
        assert!(error.contains(name), "{error}");
    }
}

#[test]
fn defaults_match_the_documented_table() {
    let c = config(&[]).unwrap();
    assert_eq!(c.bind_address, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.core.client_buffer_frames, 256);
    assert_eq!(c.core.client_buffer_bytes, 1024 * 1024);
    assert_eq!(c.core.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(c.core.connection_timeout, Duration::from_secs(60));
    assert_eq!(c.core.max_message_bytes, 65536);
    assert_eq!(c.core.rate_limit_per_second, 50);
    assert_eq!(c.core.rate_limit_burst, 100);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(c.assessment_channel, "assessment:{assessmentId}");
    assert!(c.allowed_origins.is_none());
}

#[test]
fn every_bad_value_names_its_variable() {
    for (name, value) in [
        ("WS_CLIENT_BUFFER", "lots"),
        ("WS_CLIENT_BUFFER", "0"),
        ("WS_BIND_ADDRESS", "nowhere"),
        ("WS_SLOW_CLIENT_POLICY", "shrug"),
        ("WS_HEARTBEAT_INTERVAL", "2 days"),
        ("WS_APP_PING", "maybe"),
        ("WS_UI", "sometimes"),
        ("WS_SOURCES", "kafka,carrier-pigeon"),
        ("WS_LOG_FORMAT", "xml"),
        ("WS_RATE_LIMIT", "-3"),
    ] {
        let err = config(&[(name, value)]).unwrap_err();
        assert!(err.to_string().contains(name), "{name}={value}: {err}");
    }
}

#[test]
fn missing_secret_is_reported_by_name() {
    let err =
        ServerConfig::from_settings(&Settings::from_pairs([("WS_SOURCES", "kafka")])).unwrap_err();
    assert!(err.to_string().contains("WS_AUTH_SECRET"), "{err}");
}

#[test]
fn an_api_key_turns_the_http_source_on() {
    let c = ServerConfig::from_settings(&Settings::from_pairs([
        ("WS_AUTH_SECRET", "s"),
        ("WS_API_KEY", "k"),
    ]))
    .unwrap();
    assert_eq!(c.sources, vec![SourceKind::Kafka, SourceKind::Http]);
}

#[test]
fn secret_file_is_read_and_bare_names_use_the_credentials_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("auth-secret"), "from-credential\n").unwrap();
    let settings = Settings::from_pairs([("WS_AUTH_SECRET_FILE", "auth-secret")]);
    let secret = read_secret(&settings, Some(dir.path().as_os_str().to_owned())).unwrap();
    assert_eq!(secret, b"from-credential");

    let full = dir.path().join("auth-secret");
    let settings = Settings::from_pairs([("WS_AUTH_SECRET_FILE", full.to_str().unwrap())]);
    assert_eq!(read_secret(&settings, None).unwrap(), b"from-credential");

    let settings = Settings::from_pairs([("WS_AUTH_SECRET_FILE", "/nonexistent/secret")]);
    let err = read_secret(&settings, None).unwrap_err();
    assert!(err.to_string().contains("WS_AUTH_SECRET_FILE"), "{err}");
}

#[test]
fn tls_needs_both_files_and_bare_names_use_the_credentials_directory() {
    assert_eq!(config(&[]).unwrap().tls, None);
    let err = config(&[("WS_TLS_CERT_FILE", "/etc/tls/cert.pem")]).unwrap_err();
    assert!(
        err.to_string().contains("WS_TLS_KEY_FILE is required"),
        "{err}"
    );
    let err = config(&[("WS_TLS_KEY_FILE", "/etc/tls/key.pem")]).unwrap_err();
    assert!(
        err.to_string().contains("WS_TLS_CERT_FILE is required"),
        "{err}"
    );
    let settings = Settings::from_pairs([
        ("WS_TLS_CERT_FILE", "tls-cert"),
        ("WS_TLS_KEY_FILE", "/abs/key.pem"),
    ]);
    let files = tls_files(&settings, Some("/run/credentials/ws".into()))
        .unwrap()
        .unwrap();
    assert_eq!(
        files.cert_file,
        PathBuf::from("/run/credentials/ws/tls-cert")
    );
    assert_eq!(files.key_file, PathBuf::from("/abs/key.pem"));
    assert_eq!(files.watch_interval, TLS_WATCH_INTERVAL);
}

#[test]
fn channel_rules_come_from_the_toml_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ws.toml");
    std::fs::write(
        &path,
        "[[channels.rules]]\npattern = \"admin-*\"\nroles = [\"admin\"]\n\n[[channels.rules]]\npattern = \"user:{sub}\"\nowner = true\n",
    )
    .unwrap();
    let env = [("WS_AUTH_SECRET", "s"), ("WS_SOURCES", "kafka")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let settings = Settings::load(env, Some(&path)).unwrap();
    let c = ServerConfig::from_settings(&settings).unwrap();
    assert_eq!(
        c.core.channel_rules,
        vec![
            ChannelRule {
                pattern: "admin-*".into(),
                access: Access::Roles(vec!["admin".into()])
            },
            ChannelRule {
                pattern: "user:{sub}".into(),
                access: Access::Owner
            },
        ]
    );
}

#[test]
fn owner_rule_without_sub_placeholder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ws.toml");
    std::fs::write(
        &path,
        "[[channels.rules]]\npattern = \"user:*\"\nowner = true\n",
    )
    .unwrap();
    let env = [("WS_AUTH_SECRET", "s")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    let settings = Settings::load(env, Some(&path)).unwrap();
    let err = ServerConfig::from_settings(&settings).unwrap_err();
    assert!(err.to_string().contains("channels.rules"), "{err}");
}

#[test]
fn workers_default_to_the_available_cpus_and_bad_values_name_the_variable() {
    assert_eq!(
        config(&[]).unwrap().workers,
        crate::config::server::available_workers()
    );
    assert_eq!(config(&[("WS_WORKERS", "3")]).unwrap().workers, 3);
    assert_eq!(config(&[("WS_WORKERS", "1")]).unwrap().workers, 1);
    for value in ["0", "-2", "four", "1025"] {
        let error = config(&[("WS_WORKERS", value)]).unwrap_err().to_string();
        assert!(error.contains("WS_WORKERS"), "{value:?}: {error}");
    }
}
