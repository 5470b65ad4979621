//! The channel-name rule has one home (`proto::channel`); the three entry
//! points that take a name from outside (a client's `subscribe` frame, an
//! HTTP publish, Kafka routing) must refuse the same names, and the two that
//! answer someone must answer with the same words.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use ws_realtime::config::PublishSettings;
use ws_realtime::core::{Core, CoreConfig, Identity, Open, Output};
use ws_realtime::source::PublishSink;
use ws_realtime::source::bus::Bus;
use ws_realtime::source::http::PublishApi;
use ws_realtime::source::kafka::{Route, Router, Template};

fn names() -> Vec<(String, bool)> {
    let mut names: Vec<(String, bool)> = [
        ("lines", true),
        ("trade:AAPL", true),
        ("user:alice@example.com", true),
        ("a/b#c-d_e.f", true),
        ("a b", false),
        ("trade:*", false),
        ("ünï", false),
        ("a\"b", false),
        ("tab\there", false),
    ]
    .into_iter()
    .map(|(name, valid)| (name.to_owned(), valid))
    .collect();
    names.push(("x".repeat(128), true));
    names.push(("x".repeat(129), false));
    names
}

/// The `error` frame's message for a subscribe to `name`, or `None` if it
/// was granted.
fn subscribe_refusal(name: &str) -> Option<String> {
    let now = Instant::now();
    let mut core = Core::new(CoreConfig::default(), now, 0);
    let open = Open {
        identity: Identity {
            user_id: "u".into(),
            roles: Box::default(),
            channel_patterns: None,
            expires_at_unix_ms: None,
            max_rate: None,
            delay: None,
        },
        remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
        channels: Vec::new(),
        deflate: None,
    };
    let conn = core.handle_open(now, open).expect("admitted");
    let mut frames = Vec::new();
    let drain = |core: &mut Core, frames: &mut Vec<serde_json::Value>| {
        while let Some(output) = core.poll_output() {
            match output {
                Output::Transmit(transmit) => {
                    for frame in &transmit.frames {
                        let start = frame.iter().position(|&b| b == b'{').expect("JSON");
                        frames.push(serde_json::from_slice(&frame[start..]).expect("JSON"));
                    }
                    core.handle_write_complete(now, transmit.conn);
                }
                Output::Timeout(_) => break,
                _ => {}
            }
        }
    };
    drain(&mut core, &mut frames);
    let subscribe = serde_json::json!({"type": "subscribe", "channels": [name], "id": 1});
    core.handle_text(now, conn, subscribe.to_string().as_bytes());
    drain(&mut core, &mut frames);
    let answer = frames.iter().find(|f| f["id"] == 1).expect("an answer");
    match answer["type"].as_str() {
        Some("subscribed") => None,
        Some("error") => {
            assert_eq!(answer["code"], "invalid_channel", "{answer}");
            Some(answer["message"].as_str().expect("message").to_owned())
        }
        _ => panic!("unexpected answer {answer}"),
    }
}

#[tokio::test]
async fn subscribe_http_publish_and_kafka_routing_refuse_the_same_names() {
    let (sink, mut rx) = PublishSink::channel(64);
    let api = PublishApi::new(
        "k".into(),
        Bus::Local(sink.for_source("http")),
        4096,
        &PublishSettings::default(),
    );
    // The core's side of publishing: take every message.
    tokio::spawn(async move {
        while let Some(ingest) = rx.recv().await {
            let _ = ingest.taken.map(|taken| taken.send(()));
        }
    });
    let template = Template::parse("{key}").expect("template");
    let router = Router::new(
        vec![Route::new("t", template).expect("route")],
        Template::parse("fallback").expect("fallback"),
    );

    for (name, valid) in names() {
        let refused_by_subscribe = subscribe_refusal(&name);
        assert_eq!(refused_by_subscribe.is_none(), valid, "subscribe {name:?}");

        let body = serde_json::json!({"channel": name, "data": 1}).to_string();
        let response = api.publish(body.as_bytes()).await;
        let json: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
        if valid {
            assert_eq!(response.status, 200, "publish {name:?}: {}", response.body);
        } else {
            assert_eq!(response.status, 400, "publish {name:?}: {}", response.body);
            assert_eq!(json["error"], "invalid_channel", "{}", response.body);
            assert_eq!(
                json["message"].as_str(),
                refused_by_subscribe.as_deref(),
                "the same words for {name:?}"
            );
        }

        let routed = router.route("t", Some(name.as_bytes()), b"{}");
        assert_eq!(!routed.fell_back, valid, "Kafka key {name:?}");
        if valid {
            assert_eq!(routed.channel, name);
        }
    }
}
