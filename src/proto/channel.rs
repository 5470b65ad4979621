//! Which channel names protocol v1 accepts: 1–128 characters of
//! `A-Z a-z 0-9 _ . : @ # / -`. The one home of this rule: the subscribe
//! frame (core), HTTP publish and Kafka routing all call it and word a
//! refusal with [`refusal_message`]. Checked before permissions so a
//! malformed name is reported as such, not as forbidden.

/// Longest channel name.
pub const MAX_CHANNEL_LEN: usize = 128;

/// Why a channel name is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    /// The empty string.
    #[error("is empty; channel names are 1-128 characters")]
    Empty,
    /// Over [`MAX_CHANNEL_LEN`] characters.
    #[error("is longer than {MAX_CHANNEL_LEN} characters")]
    TooLong,
    /// A character outside the allowed set.
    #[error("contains a character outside A-Z a-z 0-9 _ . : @ # / -")]
    BadCharacter,
}

/// How much of a refused name an error message quotes: enough to recognise
/// it, not a 64 KiB echo.
const QUOTED_NAME_CHARS: usize = 140;

/// Checks a channel name.
pub fn validate(name: &str) -> Result<(), ChannelNameError> {
    if name.is_empty() {
        return Err(ChannelNameError::Empty);
    }
    if name.len() > MAX_CHANNEL_LEN {
        return Err(ChannelNameError::TooLong);
    }
    if !name.chars().all(is_channel_char) {
        return Err(ChannelNameError::BadCharacter);
    }
    Ok(())
}

/// Whether `c` may appear in a channel name (`A-Z a-z 0-9 _ . : @ # / -`).
pub fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '@' | '#' | '/' | '-')
}

/// The text every entry point answers an invalid `name` with.
pub fn refusal_message(name: &str, error: ChannelNameError) -> String {
    format!(
        "Channel \"{}\" is not a valid channel name: it {error}.",
        quoted(name)
    )
}

/// `name` cut to [`QUOTED_NAME_CHARS`], with an ellipsis if it was longer.
pub fn quoted(name: &str) -> String {
    let mut shown: String = name.chars().take(QUOTED_NAME_CHARS).collect();
    if shown.len() < name.len() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_data_channel_names_are_valid() {
        for name in [
            "lines",
            "trade:AAPL",
            "user:alice@example.com",
            "a/b#c-d_e.f",
            &"x".repeat(128),
        ] {
            assert_eq!(validate(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn empty_long_and_odd_names_are_invalid() {
        assert_eq!(validate(""), Err(ChannelNameError::Empty));
        assert_eq!(validate(&"x".repeat(129)), Err(ChannelNameError::TooLong));
        for name in ["a b", "trade:*", "ünï", "a\"b", "a\nb"] {
            assert_eq!(
                validate(name),
                Err(ChannelNameError::BadCharacter),
                "{name}"
            );
        }
    }
}
