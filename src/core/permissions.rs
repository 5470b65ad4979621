//! Who may subscribe to what: the token's `channels` claim (patterns with a
//! trailing `*`) and the configured [`ChannelRule`]s (roles, or only the owner
//! a `{sub}` pattern names). Both must admit a channel.

use super::Identity;
use super::config::{Access, ChannelRule};

/// Why a channel is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Denied {
    /// The token's `channels` claim does not list it.
    #[error("your token does not allow this channel")]
    NotInToken,
    /// A rule restricts it to roles the user lacks.
    #[error("this channel is restricted to other roles")]
    MissingRole,
    /// A rule restricts it to the user it names.
    #[error("this channel belongs to another user")]
    NotOwner,
}

/// Whether `pattern` (`*` as a trailing wildcard, else exact) matches.
pub(crate) fn pattern_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

/// For an owner pattern such as `user:{sub}` or `user:{sub}:*`: the part of
/// `channel` standing where `{sub}` is, if the rest of the pattern matches.
fn owner_of<'c>(pattern: &str, channel: &'c str) -> Option<&'c str> {
    let (prefix, suffix) = pattern.split_once("{sub}")?;
    let rest = channel.strip_prefix(prefix)?;
    let owner = match suffix.strip_suffix('*') {
        Some("") => rest,
        Some(stem) => &rest[..rest.find(stem)?],
        None => rest.strip_suffix(suffix)?,
    };
    (!owner.is_empty()).then_some(owner)
}

/// Whether a rule's pattern covers `channel`.
fn rule_matches(rule: &ChannelRule, channel: &str) -> bool {
    if rule.pattern.contains("{sub}") {
        owner_of(&rule.pattern, channel).is_some()
    } else {
        pattern_matches(&rule.pattern, channel)
    }
}

/// Decides whether `identity` may subscribe to `channel`: the token's patterns
/// (when it has any) must match, and the first rule matching the channel must
/// admit the user. Channels no rule matches are open.
pub(crate) fn check(
    identity: &Identity,
    rules: &[ChannelRule],
    channel: &str,
) -> Result<(), Denied> {
    if let Some(patterns) = &identity.channel_patterns
        && !patterns.iter().any(|p| pattern_matches(p, channel))
    {
        return Err(Denied::NotInToken);
    }
    let Some(rule) = rules.iter().find(|rule| rule_matches(rule, channel)) else {
        return Ok(());
    };
    match &rule.access {
        Access::Authenticated => Ok(()),
        Access::Roles(roles) => {
            if identity.roles.iter().any(|have| roles.contains(have)) {
                Ok(())
            } else {
                Err(Denied::MissingRole)
            }
        }
        Access::Owner => match owner_of(&rule.pattern, channel) {
            Some(owner) if owner == &*identity.user_id => Ok(()),
            _ => Err(Denied::NotOwner),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(sub: &str, roles: &[&str], patterns: Option<&[&str]>) -> Identity {
        Identity {
            user_id: sub.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            channel_patterns: patterns.map(|p| p.iter().map(|s| s.to_string()).collect()),
            expires_at_unix_ms: None,
            max_rate: None,
            delay: None,
        }
    }

    fn rule(pattern: &str, access: Access) -> ChannelRule {
        ChannelRule {
            pattern: pattern.into(),
            access,
        }
    }

    #[test]
    fn without_claims_or_rules_any_channel_is_allowed() {
        assert_eq!(check(&user("a", &[], None), &[], "anything"), Ok(()));
    }

    #[test]
    fn token_patterns_restrict_channels_with_trailing_wildcard() {
        let alice = user("alice", &[], Some(&["trade:*", "lines"]));
        assert_eq!(check(&alice, &[], "trade:AAPL"), Ok(()));
        assert_eq!(check(&alice, &[], "lines"), Ok(()));
        assert_eq!(check(&alice, &[], "lines2"), Err(Denied::NotInToken));
        assert_eq!(check(&alice, &[], "analytics"), Err(Denied::NotInToken));
    }

    #[test]
    fn role_rule_admits_only_holders_of_the_role() {
        let rules = [rule("admin-*", Access::Roles(vec!["admin".into()]))];
        assert_eq!(
            check(&user("a", &["admin"], None), &rules, "admin-alerts"),
            Ok(())
        );
        assert_eq!(
            check(&user("b", &["trader"], None), &rules, "admin-alerts"),
            Err(Denied::MissingRole)
        );
        assert_eq!(check(&user("b", &[], None), &rules, "lines"), Ok(()));
    }

    #[test]
    fn owner_rule_admits_only_the_named_user() {
        let rules = [
            rule("user:{sub}", Access::Owner),
            rule("pnl:{sub}:*", Access::Owner),
        ];
        assert_eq!(
            check(&user("alice", &[], None), &rules, "user:alice"),
            Ok(())
        );
        assert_eq!(
            check(&user("bob", &[], None), &rules, "user:alice"),
            Err(Denied::NotOwner)
        );
        assert_eq!(
            check(&user("alice", &[], None), &rules, "pnl:alice:daily"),
            Ok(())
        );
        assert_eq!(
            check(&user("bob", &[], None), &rules, "pnl:alice:daily"),
            Err(Denied::NotOwner)
        );
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = [
            rule("ops-public", Access::Authenticated),
            rule("ops-*", Access::Roles(vec!["ops".into()])),
        ];
        assert_eq!(check(&user("a", &[], None), &rules, "ops-public"), Ok(()));
        assert_eq!(
            check(&user("a", &[], None), &rules, "ops-secret"),
            Err(Denied::MissingRole)
        );
    }
}
