//! Unit tests of the invariant checker: each check catches its violation.

use super::*;

fn policy() -> CheckPolicy {
    CheckPolicy {
        drop_oldest: false,
        silence_bound: Duration::from_secs(5),
        expect_empty_at_end: false,
        outbound_bound: 10_000,
    }
}

fn trace(happenings: Vec<Happening>) -> Vec<Record> {
    happenings
        .into_iter()
        .flat_map(|what| match &what {
            Happening::Publishing { msg, .. } => {
                let taken = Happening::Published { msg: *msg };
                vec![what, taken]
            }
            _ => vec![what],
        })
        .enumerate()
        .map(|(seq, what)| Record {
            seq: seq as u64,
            at: Duration::from_millis(seq as u64 * 100),
            what,
        })
        .collect()
}

fn msg(offset: i64) -> MsgId {
    MsgId {
        partition: 0,
        offset,
    }
}

/// The core takes it at once: `trace` adds the `Published` record.
fn published(offset: i64, channel: &str) -> Happening {
    Happening::Publishing {
        msg: msg(offset),
        channel: channel.to_owned(),
    }
}

fn received(client: &str, offset: i64, channel: &str) -> Happening {
    Happening::Received {
        client: client.to_owned(),
        channel: channel.to_owned(),
        msg: msg(offset),
    }
}

fn subscribed(client: &str, current: &[&str]) -> Happening {
    Happening::Subscriptions {
        client: client.to_owned(),
        current: current.iter().map(|c| c.to_string()).collect(),
    }
}

fn connect(client: &str, channels: &[&str]) -> Vec<Happening> {
    vec![
        Happening::Connecting {
            client: client.to_owned(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
        },
        Happening::Connected {
            client: client.to_owned(),
        },
        subscribed(client, channels),
    ]
}

fn invariants(result: Result<Summary, Vec<Violation>>) -> Vec<&'static str> {
    match result {
        Ok(_) => Vec::new(),
        Err(violations) => violations.iter().map(|v| v.invariant).collect(),
    }
}

#[test]
fn a_clean_fan_out_passes() {
    let mut log = connect("a", &["lines"]);
    log.extend(connect("b", &["books"]));
    log.extend([
        published(1, "lines"),
        published(2, "books"),
        received("a", 1, "lines"),
        received("b", 2, "books"),
        Happening::Quiesced,
    ]);
    let summary = check(&trace(log), policy()).expect("clean run");
    assert_eq!(summary.published, 2);
    assert_eq!(summary.received, 2);
    assert_eq!(summary.required, 2);
}

#[test]
fn delivery_to_a_non_subscriber_is_caught() {
    let mut log = connect("a", &["lines"]);
    log.extend(connect("b", &["books"]));
    log.extend([published(1, "lines"), received("b", 1, "lines")]);
    assert!(invariants(check(&trace(log), policy())).contains(&"no_delivery_to_non_subscriber"));
}

#[test]
fn a_message_published_after_the_unsubscribe_ack_must_not_arrive() {
    let mut log = connect("a", &["lines"]);
    log.extend([
        Happening::UnsubscribeSent {
            client: "a".into(),
            channels: vec!["lines".into()],
        },
        subscribed("a", &[]),
        published(1, "lines"),
        // The stream says subscribed again, but the publish came first.
        Happening::SubscribeSent {
            client: "a".into(),
            channels: vec!["lines".into()],
        },
        subscribed("a", &["lines"]),
        received("a", 1, "lines"),
    ]);
    assert!(invariants(check(&trace(log), policy())).contains(&"no_delivery_to_non_subscriber"));
}

#[test]
fn a_missing_message_is_caught_for_a_healthy_subscriber() {
    let mut log = connect("a", &["lines"]);
    log.extend([
        published(1, "lines"),
        published(2, "lines"),
        received("a", 1, "lines"),
        Happening::Quiesced,
    ]);
    assert_eq!(
        invariants(check(&trace(log), policy())),
        vec!["every_subscribed_message_delivered"]
    );
}

#[test]
fn an_unsubscribe_sent_before_the_subscribe_ack_owes_nothing() {
    let mut log = connect("a", &[]);
    log.extend([
        Happening::SubscribeSent {
            client: "a".into(),
            channels: vec!["lines".into()],
        },
        Happening::UnsubscribeSent {
            client: "a".into(),
            channels: vec!["lines".into()],
        },
        subscribed("a", &["lines"]),
        published(1, "lines"),
        subscribed("a", &[]),
        Happening::Quiesced,
    ]);
    assert!(check(&trace(log), policy()).is_ok());
}

#[test]
fn duplicates_and_reordering_are_caught() {
    let mut log = connect("a", &["lines"]);
    log.extend([
        published(1, "lines"),
        published(2, "lines"),
        received("a", 2, "lines"),
        received("a", 1, "lines"),
        received("a", 1, "lines"),
    ]);
    let found = invariants(check(&trace(log), policy()));
    assert!(found.contains(&"no_duplicates"));
    assert!(found.contains(&"per_partition_order"));
}

#[test]
fn a_closed_client_may_miss_only_its_tail() {
    let mut log = connect("a", &["lines"]);
    log.extend([
        published(1, "lines"),
        published(2, "lines"),
        published(3, "lines"),
        received("a", 1, "lines"),
        Happening::Closed {
            client: "a".into(),
            code: Some(1008),
        },
        Happening::Quiesced,
    ]);
    assert!(check(&trace(log), policy()).is_ok());
    // A gap before the last received message is a loss, closed or not.
    let mut gapped = connect("b", &["lines"]);
    gapped.extend([
        published(1, "lines"),
        published(2, "lines"),
        received("b", 2, "lines"),
        Happening::Closed {
            client: "b".into(),
            code: Some(1008),
        },
    ]);
    assert_eq!(
        invariants(check(&trace(gapped), policy())),
        vec!["every_subscribed_message_delivered"]
    );
}

#[test]
fn drop_oldest_losses_must_be_counted() {
    let mut log = connect("a", &["lines"]);
    log.extend([
        Happening::Paused { client: "a".into() },
        published(1, "lines"),
        published(2, "lines"),
        Happening::Resumed { client: "a".into() },
        received("a", 2, "lines"),
        Happening::Quiesced,
        Happening::ServerSample(ServerSample::default()),
    ]);
    let lossy = CheckPolicy {
        drop_oldest: true,
        ..policy()
    };
    assert_eq!(
        invariants(check(&trace(log.clone()), lossy)),
        vec!["drops_are_counted"]
    );
    let last = log.len() - 1;
    log[last] = Happening::ServerSample(ServerSample {
        dropped_oldest: 1,
        ..ServerSample::default()
    });
    assert!(check(&trace(log), lossy).is_ok());
}

#[test]
fn a_silent_client_left_open_is_caught() {
    let mut log = connect("a", &["lines"]);
    log.push(Happening::WentSilent { client: "a".into() });
    // Samples every 100 ms; the bound is 5 s.
    log.extend((0..60).map(|_| Happening::ServerSample(ServerSample::default())));
    assert!(
        invariants(check(&trace(log.clone()), policy())).contains(&"silent_clients_closed_in_time")
    );
    let closed_at = 40;
    for item in log.iter_mut().skip(closed_at) {
        if let Happening::ServerSample(sample) = item {
            sample.heartbeat_failures = 1;
        }
    }
    assert!(check(&trace(log), policy()).is_ok());
}

#[test]
fn tables_left_non_empty_after_everyone_left_are_caught() {
    let mut log = connect("a", &["lines"]);
    log.push(Happening::Left { client: "a".into() });
    log.push(Happening::ServerSample(ServerSample {
        subscriptions: 1,
        ..ServerSample::default()
    }));
    let expect_empty = CheckPolicy {
        expect_empty_at_end: true,
        ..policy()
    };
    assert_eq!(
        invariants(check(&trace(log.clone()), expect_empty)),
        vec!["tables_empty_at_end"]
    );
    let last = log.len() - 1;
    log[last] = Happening::ServerSample(ServerSample::default());
    assert!(check(&trace(log), expect_empty).is_ok());
}

#[test]
fn a_recover_subscribe_may_replay_messages_published_before_it_and_a_plain_one_may_not() {
    let run = |request: Happening| {
        let mut log = connect("a", &[]);
        log.extend([
            published(1, "lines"),
            request,
            subscribed("a", &["lines"]),
            received("a", 1, "lines"),
        ]);
        invariants(check(&trace(log), policy()))
    };
    let channels = vec!["lines".to_owned()];
    assert_eq!(
        run(Happening::RecoverSent {
            client: "a".into(),
            channels: channels.clone(),
        }),
        Vec::<&str>::new()
    );
    assert!(
        run(Happening::SubscribeSent {
            client: "a".into(),
            channels,
        })
        .contains(&"no_delivery_to_non_subscriber")
    );
}

#[test]
fn a_queue_over_the_per_client_bound_is_caught() {
    let mut log = connect("a", &["lines"]);
    log.push(Happening::ServerSample(ServerSample {
        outbound_peak_bytes: 10_000,
        ..ServerSample::default()
    }));
    assert!(check(&trace(log.clone()), policy()).is_ok());
    log.push(Happening::ServerSample(ServerSample {
        outbound_peak_bytes: 10_001,
        ..ServerSample::default()
    }));
    assert_eq!(
        invariants(check(&trace(log), policy())),
        vec!["outbound_within_bound"]
    );
}

#[test]
fn bytes_left_in_queues_or_sockets_after_everyone_left_are_caught() {
    let expect_empty = CheckPolicy {
        expect_empty_at_end: true,
        ..policy()
    };
    for sample in [
        ServerSample {
            outbound_bytes: 1,
            ..ServerSample::default()
        },
        ServerSample {
            socket_unread_bytes: 1,
            ..ServerSample::default()
        },
    ] {
        let mut log = connect("a", &["lines"]);
        log.push(Happening::Left { client: "a".into() });
        log.push(Happening::ServerSample(sample));
        assert_eq!(
            invariants(check(&trace(log), expect_empty)),
            vec!["tables_empty_at_end"]
        );
    }
}
