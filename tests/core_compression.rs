//! permessage-deflate in the core: one compressed frame per message, shared
//! by every subscriber that negotiated deflate, and exactly the plain
//! frame's payload once inflated.

mod core_support;

use core_support::*;
use proptest::prelude::*;
use ws_realtime::proto::deflate::inflate;
use ws_realtime::proto::deflate_offer::Deflate;

const FULL_WINDOW: Deflate = Deflate {
    server_max_window_bits: 15,
};

/// Opens a connection subscribed to `book`, with or without deflate.
fn open_on_book(h: &mut Harness, user: &str, deflate: Option<Deflate>) -> ConnId {
    let mut open = open_as(identity(user));
    open.channels = vec!["book".to_owned()];
    open.deflate = deflate;
    let conn = h.core.handle_open(h.now, open).expect("admitted");
    h.drain(conn);
    conn
}

/// The message frames written to each connection, in `conns` order.
fn written(h: &mut Harness, conns: &[ConnId]) -> Vec<Vec<Bytes>> {
    let mut out = vec![Vec::new(); conns.len()];
    loop {
        match h.core.poll_output() {
            Some(Output::Transmit(transmit)) => {
                if let Some(i) = conns.iter().position(|c| *c == transmit.conn) {
                    out[i].extend(transmit.frames);
                }
                h.write_complete(transmit.conn);
            }
            Some(Output::Disconnect(_) | Output::Event(_) | Output::Verify(_)) => {}
            Some(Output::Timeout(_)) | None => break,
        }
    }
    out
}

fn publish(h: &mut Harness, payload: &[u8]) {
    h.core.handle_publish(
        h.now,
        Publish {
            channel: "book".to_owned(),
            pos: None,
            payload: Bytes::copy_from_slice(payload),
            key: None,
        },
    );
}

fn order_book(levels: usize) -> Vec<u8> {
    let side = |base: f64| -> Vec<serde_json::Value> {
        (0..levels)
            .map(|i| json!([base + i as f64 * 0.25, 100 + i * 7]))
            .collect()
    };
    serde_json::to_vec(&json!({"symbol": "BTC-USD", "bids": side(100.0), "asks": side(101.0)}))
        .unwrap()
}

#[test]
fn deflate_subscribers_share_one_compressed_frame_and_plain_ones_get_plain() {
    let mut h = Harness::default();
    let plain = open_on_book(&mut h, "plain", None);
    let a = open_on_book(&mut h, "a", Some(FULL_WINDOW));
    let b = open_on_book(&mut h, "b", Some(FULL_WINDOW));
    publish(&mut h, &order_book(20));
    let frames = written(&mut h, &[plain, a, b]);
    let [plain_frame, a_frame, b_frame] = [&frames[0][0], &frames[1][0], &frames[2][0]];
    let plain_decoded = ws_frame::decode(plain_frame).unwrap();
    assert!(!plain_decoded.compressed);
    assert_eq!(
        a_frame.as_ptr(),
        b_frame.as_ptr(),
        "compressed once, shared"
    );
    let a_decoded = ws_frame::decode(a_frame).unwrap();
    assert!(a_decoded.compressed, "RSV1 set");
    assert!(
        a_frame.len() * 2 < plain_frame.len(),
        "{} vs {}",
        a_frame.len(),
        plain_frame.len()
    );
    assert_eq!(
        inflate(a_decoded.payload, 1 << 20).unwrap(),
        plain_decoded.payload
    );
    let stats = h.core.stats();
    assert_eq!(stats.deflate_connections, 2);
    assert_eq!(
        stats.compression_saved_bytes,
        2 * (plain_frame.len() - a_frame.len()) as u64
    );
}

#[test]
fn small_messages_and_control_frames_stay_uncompressed() {
    let mut h = Harness::default();
    let a = open_on_book(&mut h, "a", Some(FULL_WINDOW));
    publish(&mut h, br#"{"px":1}"#);
    h.ws_ping(a, b"hb");
    let frames = &written(&mut h, &[a])[0];
    assert_eq!(frames.len(), 2);
    for frame in frames {
        assert!(!ws_frame::decode(frame).unwrap().compressed);
    }
}

#[test]
fn the_minimum_size_is_configurable_and_the_gauge_follows_closes() {
    let mut h = Harness::new(CoreConfig {
        compression_min_bytes: 1,
        ..CoreConfig::default()
    });
    let a = open_on_book(&mut h, "a", Some(FULL_WINDOW));
    publish(
        &mut h,
        br#"{"px":1,"qty":1,"px2":1,"qty2":1,"px3":1,"qty3":1}"#,
    );
    let frames = &written(&mut h, &[a])[0];
    assert!(ws_frame::decode(&frames[0]).unwrap().compressed);
    h.socket_closed(a);
    assert_eq!(h.core.stats().deflate_connections, 0);
}

#[test]
fn corrupt_compressed_data_closes_1007_and_others_go_on() {
    let mut h = Harness::default();
    let a = open_on_book(&mut h, "a", Some(FULL_WINDOW));
    let b = open_on_book(&mut h, "b", Some(FULL_WINDOW));
    h.core.handle_bad_compressed_data(h.now, a);
    assert_eq!(
        h.drain(a),
        [Received::Close(1007, "corrupt compressed data".to_owned())]
    );
    publish(&mut h, &order_book(10));
    assert_eq!(written(&mut h, &[b])[0].len(), 1);
}

/// The compressed form of a `message` frame: FIN, RSV1 and the text opcode
/// in the first byte, and once inflated the very JSON of the plain frame.
#[test]
fn compressed_message_frame_snapshot() {
    let mut h = Harness::default();
    let d = open_on_book(&mut h, "d", Some(FULL_WINDOW));
    publish(&mut h, &order_book(8));
    let frame = written(&mut h, &[d])[0][0].clone();
    let decoded = ws_frame::decode(&frame).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&inflate(decoded.payload, 1 << 20).unwrap()).unwrap();
    insta::assert_json_snapshot!(json!({
        "first_byte": format!("{:#04x}", frame[0]),
        "compressed_payload_bytes": decoded.payload.len(),
        "inflated": json,
    }));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// For any payload, what a deflate subscriber inflates is byte for byte
    /// the payload the plain subscriber of the same fan-out got.
    #[test]
    fn inflating_the_compressed_frame_gives_the_plain_payload(
        payload in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..3000),
            (1usize..120).prop_map(order_book),
            "[a-z \"{}:,0-9]{0,4000}".prop_map(String::into_bytes),
        ],
        min_bytes in 0usize..600,
        window_bits in 8u8..=15,
    ) {
        let mut h = Harness::new(CoreConfig {
            compression_min_bytes: min_bytes,
            ..CoreConfig::default()
        });
        let plain = open_on_book(&mut h, "plain", None);
        let deflate = Deflate { server_max_window_bits: window_bits };
        let d = open_on_book(&mut h, "d", Some(deflate));
        publish(&mut h, &payload);
        let frames = written(&mut h, &[plain, d]);
        let plain_decoded = ws_frame::decode(&frames[0][0]).unwrap();
        let d_decoded = ws_frame::decode(&frames[1][0]).unwrap();
        prop_assert!(!plain_decoded.compressed);
        let received = if d_decoded.compressed {
            prop_assert!(plain_decoded.payload.len() >= min_bytes);
            prop_assert!(plain_decoded.payload.len() <= deflate.max_compressed_payload());
            prop_assert!(d_decoded.payload.len() < plain_decoded.payload.len());
            inflate(d_decoded.payload, 1 << 22).unwrap()
        } else {
            d_decoded.payload.to_vec()
        };
        prop_assert_eq!(received, plain_decoded.payload);
    }
}
