//! The codes of the wire: what the server puts in `error` frames, close
//! frames and `message` frames. They sit at the bottom of the import order
//! so the encoders here and the core above both name them without a cycle.

/// Stable `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not JSON, or JSON of the wrong shape.
    BadFrame,
    /// A `type` the server does not know.
    UnknownType,
    /// A channel name outside 1–128 chars of `A-Z a-z 0-9 _ . : @ # / -`.
    InvalidChannel,
    /// Not allowed by the token or the channel rules.
    Forbidden,
    /// Over the per-connection channel limit.
    ChannelLimit,
    /// Over the inbound rate limit; the frame was not processed.
    RateLimited,
    /// Binary frames are not part of protocol v1.
    BinaryNotSupported,
    /// A malformed `since` cursor; the message names the channel.
    BadPosition,
    /// A `refresh` was refused; the code says why (`token_expired`,
    /// `invalid_token`, `unknown_key`, `sub_mismatch`, …).
    TokenRefused(&'static str),
}

impl ErrorCode {
    /// The `code` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ChannelLimit => "channel_limit",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::BadPosition => "bad_position",
            ErrorCode::TokenRefused(code) => code,
        }
    }
}

/// WebSocket close codes the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure (the client closed, or said goodbye).
    Normal,
    /// 1001: server shutting down.
    GoingAway,
    /// 1002: the client broke the WebSocket protocol (RFC 6455 §7.4.1).
    ProtocolError,
    /// 1007: a text message that is not UTF-8 (RFC 6455 §8.1).
    InvalidPayload,
    /// 1008: policy violation (slow consumer, rate limit, token expired).
    Policy,
    /// 1009: inbound frame too big.
    TooBig,
    /// 1011: internal error.
    Internal,
}

impl CloseCode {
    /// The numeric code on the wire.
    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
        }
    }
}

/// How a payload was embedded in the `message` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// Valid JSON, embedded verbatim under `data`.
    Json,
    /// UTF-8 that is not JSON, embedded as a JSON string under `data`.
    Text,
    /// Other bytes, base64 under `b64data`.
    Binary,
}

impl PayloadKind {
    /// Stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Json => "json",
            PayloadKind::Text => "text",
            PayloadKind::Binary => "binary",
        }
    }
}
