//! Negotiating permessage-deflate (RFC 7692 §7.1) from a client's
//! `Sec-WebSocket-Extensions` offers.
//!
//! The server always answers `server_no_context_takeover`: every message it
//! sends is compressed from an empty window, so its compressed bytes do not
//! depend on the connection and one compressed frame serves every
//! subscriber. It also answers `client_no_context_takeover` (§7.1.1.2 lets a
//! server add it unasked), so inflating a client's message needs no window
//! kept between messages: an idle connection holds no 32 KiB of inflate
//! state. An offer the server cannot honour is declined, never a reason to
//! fail the handshake: the connection then simply runs uncompressed.

/// The extension's registered name.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// What was agreed for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Deflate {
    /// The largest LZ77 window (as a power of two, 8–15) the client's
    /// inflater keeps for server messages. A compressed server message may
    /// only go to this connection if its plain payload fits the window; 15
    /// (32 KiB) unless the client asked for less.
    pub server_max_window_bits: u8,
}

impl Deflate {
    /// The longest plain payload that may go compressed to this connection:
    /// with no context takeover, back-references never reach further than
    /// the message itself, so a payload that fits the window is always
    /// readable by the client whatever window the compressor used.
    pub fn max_compressed_payload(self) -> usize {
        if self.server_max_window_bits >= 15 {
            usize::MAX
        } else {
            1 << self.server_max_window_bits
        }
    }

    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub fn response_header(self) -> String {
        let mut header =
            format!("{EXTENSION_NAME}; server_no_context_takeover; client_no_context_takeover");
        if self.server_max_window_bits < 15 {
            header.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        header
    }
}

/// Picks the first acceptable permessage-deflate offer among the values of
/// every `Sec-WebSocket-Extensions` header of a request (in order). `None`
/// when there is none, or every offer had to be declined.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a [u8]>) -> Option<Deflate> {
    header_values
        .into_iter()
        .filter_map(|value| std::str::from_utf8(value).ok())
        .flat_map(split_outside_quotes::<','>)
        .find_map(accept_offer)
}

/// Accepts one offer (`permessage-deflate; param; param=value`) or declines
/// it (`None`) per RFC 7692 §7.1: unknown parameters, duplicates and
/// invalid values decline it, and so does anything not this extension.
fn accept_offer(offer: &str) -> Option<Deflate> {
    let mut parts = split_outside_quotes::<';'>(offer);
    let name = parts.next()?.trim();
    if !name.eq_ignore_ascii_case(EXTENSION_NAME) {
        return None;
    }
    let mut seen = [false; 4];
    let mut server_max_window_bits = 15;
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((key, value)) => (key.trim(), Some(unquote(value.trim())?)),
            None => (param.trim(), None),
        };
        let index = match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                server_max_window_bits = window_bits(value?)?;
                2
            }
            // With no value, or a valid one: either way the client merely
            // says it can limit its window; the server does not ask it to.
            "client_max_window_bits" => {
                if let Some(value) = value {
                    window_bits(value)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    Some(Deflate {
        server_max_window_bits,
    })
}

/// A window-bits value: 1*DIGIT in 8–15, no sign, no leading zero.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || value.starts_with('0') {
        return None;
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// A token, or a quoted-string without escapes (RFC 7692 §7.1 allows both
/// for values; an escape in a number is not valid, so it declines).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            (!inner.contains(['"', '\\'])).then_some(inner)
        }
        None => Some(value),
    }
}

/// Splits on `SEP` where it is not inside a quoted string.
fn split_outside_quotes<const SEP: char>(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        let mut quoted = false;
        for (at, c) in current.char_indices() {
            match c {
                '"' => quoted = !quoted,
                c if c == SEP && !quoted => {
                    rest = Some(&current[at + 1..]);
                    return Some(&current[..at]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(value: &str) -> Option<Deflate> {
        negotiate([value.as_bytes()])
    }

    #[test]
    fn the_common_offers_are_accepted_with_a_full_window() {
        for value in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
            "PerMessage-Deflate ; Client_Max_Window_Bits=15",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=\"15\"",
        ] {
            assert_eq!(
                offer(value),
                Some(Deflate {
                    server_max_window_bits: 15
                }),
                "{value}"
            );
        }
    }

    #[test]
    fn a_smaller_server_window_is_honoured_and_echoed() {
        let agreed = offer("permessage-deflate; server_max_window_bits=10").unwrap();
        assert_eq!(agreed.server_max_window_bits, 10);
        assert_eq!(agreed.max_compressed_payload(), 1024);
        assert!(
            agreed
                .response_header()
                .ends_with("; server_max_window_bits=10")
        );
    }

    #[test]
    fn offers_the_rfc_says_to_decline_are_declined_and_the_next_is_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=x",
            "permessage-deflate; client_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate; server_max_window_bits=\"1\\5\"",
            "x-webkit-deflate-frame",
            "",
            ";;,,",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
        let fallback = "permessage-deflate; server_max_window_bits=99, permessage-deflate";
        assert!(offer(fallback).is_some());
    }

    #[test]
    fn offers_spread_over_several_headers_are_read_in_order() {
        let headers: [&[u8]; 2] = [b"foo, permessage-deflate; bogus", b"permessage-deflate"];
        assert!(negotiate(headers).is_some());
        assert_eq!(negotiate([&b"\xff\xfe"[..]]), None);
    }
}
