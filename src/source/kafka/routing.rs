//! Channel routing: a pure function from a Kafka message (topic, key,
//! payload) to a gateway channel. Routes pair a topic pattern with a
//! template such as `{topic}`, `{key}`, `{topic}:{key}` or
//! `assessment:{assessmentId}` (a dotted JSON field path). A message whose
//! template cannot be filled, or fills to an invalid channel name, goes to
//! the fallback template; the result is always a valid channel name, whatever
//! the input, so the fuzzer may feed it anything.

use regex::Regex;

use crate::proto::channel::{self, MAX_CHANNEL_LEN, is_channel_char};

/// Whether `name` is a channel name the core accepts (the rule lives in
/// `proto::channel`).
fn is_valid_channel(name: &str) -> bool {
    channel::validate(name).is_ok()
}

/// Why a template string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{` without its `}`, or a stray `}`.
    #[error("unbalanced braces")]
    UnbalancedBraces,
    /// `{}` or a path with an empty segment (`{a..b}`).
    #[error("empty placeholder or path segment")]
    EmptyPlaceholder,
    /// Literal text a channel name may not contain.
    #[error("{0:?} is not allowed in a channel name")]
    InvalidLiteral(char),
    /// Nothing at all.
    #[error("the template is empty")]
    Empty,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Copied as it is.
    Literal(String),
    /// The message's topic.
    Topic,
    /// The message's key, as UTF-8.
    Key,
    /// A JSON field of the payload, by dotted path.
    Field(Vec<String>),
}

/// A parsed channel template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Literals and placeholders in order.
    parts: Vec<Part>,
}

impl Template {
    /// Parses `assessment:{assessmentId}`, `{topic}:{key}`, `market`, …
    pub fn parse(raw: &str) -> Result<Template, TemplateError> {
        if raw.is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut rest = raw;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(literal(rest)?);
                    rest = "";
                }
                Some(at) if rest[at..].starts_with('}') => {
                    return Err(TemplateError::UnbalancedBraces);
                }
                Some(at) => {
                    if at > 0 {
                        parts.push(literal(&rest[..at])?);
                    }
                    let after = &rest[at + 1..];
                    let close = after.find('}').ok_or(TemplateError::UnbalancedBraces)?;
                    let name = &after[..close];
                    if name.contains('{') {
                        return Err(TemplateError::UnbalancedBraces);
                    }
                    parts.push(placeholder(name)?);
                    rest = &after[close + 1..];
                }
            }
        }
        Ok(Template { parts })
    }

    /// Whether filling this template needs the payload parsed as JSON.
    fn needs_json(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Field(_)))
    }

    /// The filled channel, or `None` when a placeholder cannot be filled or
    /// the result is not a valid channel name.
    fn fill(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        json: Option<&serde_json::Value>,
    ) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Topic => out.push_str(topic),
                Part::Key => out.push_str(non_empty(std::str::from_utf8(key?).ok()?)?),
                Part::Field(path) => push_field(&mut out, json?, path)?,
            }
            if out.len() > MAX_CHANNEL_LEN {
                return None;
            }
        }
        is_valid_channel(&out).then_some(out)
    }
}

/// An empty key or field names nothing (`assessment:` is not a useful
/// channel), so it counts as unfillable.
fn non_empty(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

fn literal(text: &str) -> Result<Part, TemplateError> {
    match text.chars().find(|c| !is_channel_char(*c)) {
        Some(bad) => Err(TemplateError::InvalidLiteral(bad)),
        None => Ok(Part::Literal(text.to_owned())),
    }
}

fn placeholder(name: &str) -> Result<Part, TemplateError> {
    match name.trim() {
        "topic" => Ok(Part::Topic),
        "key" => Ok(Part::Key),
        path => {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            if segments.iter().any(|s| s.is_empty()) {
                return Err(TemplateError::EmptyPlaceholder);
            }
            Ok(Part::Field(segments))
        }
    }
}

/// Appends the scalar at `path`; objects, arrays, null and absent fields
/// cannot name a channel.
fn push_field(out: &mut String, json: &serde_json::Value, path: &[String]) -> Option<()> {
    let mut value = json;
    for segment in path {
        value = match value {
            serde_json::Value::Object(map) => map.get(segment)?,
            serde_json::Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match value {
        serde_json::Value::String(s) => out.push_str(non_empty(s)?),
        serde_json::Value::Number(n) => out.push_str(&n.to_string()),
        serde_json::Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        _ => return None,
    }
    Some(())
}

/// Which topics a route applies to.
#[derive(Debug, Clone)]
enum TopicPattern {
    /// One topic by name.
    Exact(String),
    /// Topics matching a `^regex`.
    Regex(Regex),
}

/// A topic pattern and the template its messages are routed with.
#[derive(Debug, Clone)]
pub struct Route {
    /// The topics it applies to.
    pattern: TopicPattern,
    /// The channel it builds.
    template: Template,
}

impl Route {
    /// A route for `topic` (a name, or a regex when it starts with `^`).
    pub fn new(topic: &str, template: Template) -> Result<Route, regex::Error> {
        let pattern = if topic.starts_with('^') {
            TopicPattern::Regex(Regex::new(topic)?)
        } else {
            TopicPattern::Exact(topic.to_owned())
        };
        Ok(Route { pattern, template })
    }

    fn matches(&self, topic: &str) -> bool {
        match &self.pattern {
            TopicPattern::Exact(name) => name == topic,
            TopicPattern::Regex(regex) => regex.is_match(topic),
        }
    }
}

/// Where one message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// A valid channel name.
    pub channel: String,
    /// Whether the route's template could not be filled and the fallback
    /// was used (counted as `kind="routing_fallback"`).
    pub fell_back: bool,
}

/// Routes messages: the first route whose pattern matches the topic builds
/// the channel; no matching route means the fallback (`{topic}` by default).
#[derive(Debug, Clone)]
pub struct Router {
    /// Tried in order.
    routes: Vec<Route>,
    /// Used when no route matches or the matching one cannot be filled.
    fallback: Template,
}

impl Router {
    /// A router with `routes` tried in order and `fallback` otherwise.
    pub fn new(routes: Vec<Route>, fallback: Template) -> Router {
        Router { routes, fallback }
    }

    /// Whether a configured route applies to `topic` (by name or regex).
    pub fn has_route_for(&self, topic: &str) -> bool {
        self.routes.iter().any(|r| r.matches(topic))
    }

    /// Puts `route` before every configured one, so it wins for its topics.
    pub fn prepend(&mut self, route: Route) {
        self.routes.insert(0, route);
    }

    /// The channel for one message. Never panics; always a valid channel.
    pub fn route(&self, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Routed {
        let mut json = JsonCache {
            payload,
            value: None,
        };
        if let Some(route) = self.routes.iter().find(|r| r.matches(topic)) {
            let value = json.get(&route.template);
            if let Some(channel) = route.template.fill(topic, key, value) {
                return Routed {
                    channel,
                    fell_back: false,
                };
            }
            let channel = self.fill_fallback(topic, key, json.get(&self.fallback));
            return Routed {
                channel,
                fell_back: true,
            };
        }
        // No route: the fallback is the configured default routing, not a
        // failure, unless it cannot be filled either.
        let value = json.get(&self.fallback);
        match self.fallback.fill(topic, key, value) {
            Some(channel) => Routed {
                channel,
                fell_back: false,
            },
            None => Routed {
                channel: sanitize(topic),
                fell_back: true,
            },
        }
    }

    fn fill_fallback(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        json: Option<&serde_json::Value>,
    ) -> String {
        self.fallback
            .fill(topic, key, json)
            .unwrap_or_else(|| sanitize(topic))
    }
}

/// The payload parsed as JSON at most once, and only when a template needs it.
struct JsonCache<'a> {
    /// The raw payload.
    payload: &'a [u8],
    /// `None` until parsed; then `Some(None)` when it is not JSON.
    value: Option<Option<serde_json::Value>>,
}

impl JsonCache<'_> {
    fn get(&mut self, template: &Template) -> Option<&serde_json::Value> {
        if template.needs_json() && self.value.is_none() {
            self.value = Some(serde_json::from_slice(self.payload).ok());
        }
        self.value.as_ref().and_then(Option::as_ref)
    }
}

/// The last resort: the topic with disallowed characters replaced, cut to
/// the length limit; `kafka` when nothing usable is left.
fn sanitize(topic: &str) -> String {
    let cleaned: String = topic
        .chars()
        .map(|c| if is_channel_char(c) { c } else { '_' })
        .take(MAX_CHANNEL_LEN)
        .collect();
    if cleaned.is_empty() {
        "kafka".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)], fallback: &str) -> Router {
        let routes = routes
            .iter()
            .map(|(topic, template)| Route::new(topic, Template::parse(template).unwrap()).unwrap())
            .collect();
        Router::new(routes, Template::parse(fallback).unwrap())
    }

    #[test]
    fn default_routing_uses_the_topic() {
        let r = router(&[], "{topic}");
        let routed = r.route("lines", Some(b"k"), b"not json");
        assert_eq!(
            routed,
            Routed {
                channel: "lines".into(),
                fell_back: false
            }
        );
    }

    #[test]
    fn key_and_topic_key_templates_use_the_message_key() {
        let r = router(
            &[("trades", "{key}"), ("quotes", "{topic}:{key}")],
            "{topic}",
        );
        assert_eq!(r.route("trades", Some(b"AAPL"), b"{}").channel, "AAPL");
        assert_eq!(
            r.route("quotes", Some(b"MSFT"), b"{}").channel,
            "quotes:MSFT"
        );
    }

    #[test]
    fn missing_or_non_utf8_key_falls_back_and_says_so() {
        let r = router(&[("trades", "{key}")], "{topic}");
        let routed = r.route("trades", None, b"{}");
        assert_eq!(
            routed,
            Routed {
                channel: "trades".into(),
                fell_back: true
            }
        );
        assert!(r.route("trades", Some(&[0xff, 0xfe]), b"{}").fell_back);
        assert!(r.route("trades", Some(b""), b"{}").fell_back);
    }

    #[test]
    fn json_field_template_reads_dotted_paths_and_scalars() {
        let r = router(
            &[
                (r"^trading\..*", "assessment:{assessmentId}"),
                ("deep", "d:{a.b.0.c}"),
            ],
            "{topic}",
        );
        let routed = r.route("trading.fills", None, br#"{"assessmentId":"X1","p":1}"#);
        assert_eq!(
            routed,
            Routed {
                channel: "assessment:X1".into(),
                fell_back: false
            }
        );
        assert_eq!(
            r.route("trading.fills", None, br#"{"assessmentId":42}"#)
                .channel,
            "assessment:42"
        );
        assert_eq!(
            r.route("deep", None, br#"{"a":{"b":[{"c":"z"}]}}"#).channel,
            "d:z"
        );
    }

    #[test]
    fn unfillable_field_falls_back_to_the_fallback_template() {
        let r = router(
            &[(r"^trading\..*", "assessment:{assessmentId}")],
            "unrouted:{topic}",
        );
        for payload in [
            &b"{}"[..],
            b"not json",
            br#"{"assessmentId":null}"#,
            br#"{"assessmentId":{"x":1}}"#,
            &[0xff, 0x00],
        ] {
            let routed = r.route("trading.fills", None, payload);
            assert_eq!(routed.channel, "unrouted:trading.fills");
            assert!(routed.fell_back);
        }
    }

    #[test]
    fn a_field_that_would_make_an_invalid_channel_falls_back() {
        let r = router(&[("t", "a:{id}")], "{topic}");
        assert!(r.route("t", None, br#"{"id":"has space"}"#).fell_back);
        let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(200));
        assert!(r.route("t", None, long.as_bytes()).fell_back);
        assert!(r.route("t", None, br#"{"id":""}"#).fell_back);
    }

    #[test]
    fn literal_route_sends_every_message_to_one_channel() {
        let r = router(&[(r"^market-data\..*", "market")], "{topic}");
        assert_eq!(r.route("market-data.eod", None, b"\x00").channel, "market");
        assert_eq!(r.route("lines", None, b"{}").channel, "lines");
    }

    #[test]
    fn first_matching_route_wins() {
        let r = router(&[("^a", "first"), ("^a.*", "second")], "{topic}");
        assert_eq!(r.route("abc", None, b"").channel, "first");
    }

    #[test]
    fn invalid_topic_names_are_sanitized_into_valid_channels() {
        let r = router(&[], "{topic}");
        for topic in ["", "sp ace", "ünï", &"t".repeat(300)] {
            let routed = r.route(topic, None, b"");
            assert!(
                is_valid_channel(&routed.channel),
                "{topic:?} -> {:?}",
                routed.channel
            );
        }
    }

    #[test]
    fn templates_with_bad_syntax_are_refused() {
        assert_eq!(Template::parse(""), Err(TemplateError::Empty));
        assert_eq!(Template::parse("a{b"), Err(TemplateError::UnbalancedBraces));
        assert_eq!(Template::parse("a}b"), Err(TemplateError::UnbalancedBraces));
        assert_eq!(
            Template::parse("{a{b}}"),
            Err(TemplateError::UnbalancedBraces)
        );
        assert_eq!(
            Template::parse("x:{}"),
            Err(TemplateError::EmptyPlaceholder)
        );
        assert_eq!(
            Template::parse("{a..b}"),
            Err(TemplateError::EmptyPlaceholder)
        );
        assert_eq!(
            Template::parse("a b"),
            Err(TemplateError::InvalidLiteral(' '))
        );
    }

    proptest::proptest! {
        #[test]
        fn any_input_routes_to_a_valid_channel(
            template in ".{0,40}",
            topic in ".{0,60}",
            key in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..40)),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
        ) {
            let route_template = Template::parse(&template).unwrap_or_else(|_| Template::parse("{key}").unwrap());
            let r = Router::new(vec![Route::new("^", route_template).unwrap()], Template::parse("{topic}").unwrap());
            let routed = r.route(&topic, key.as_deref(), &payload);
            proptest::prop_assert!(is_valid_channel(&routed.channel), "{:?}", routed.channel);
        }
    }
}
