//! The Grafana dashboard in `deploy/grafana/ws-realtime.json` queries only
//! metrics, and labels, that the server really exports: a server with the
//! Kafka source (librdkafka's mock cluster, in-process) takes one record and
//! serves one client, `/metrics` is scraped, and every PromQL expression of
//! the dashboard is checked against what came back. A renamed metric or a
//! typo in a panel fails here instead of showing "No data" in production.

mod kafka_support;
mod server_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use prometheus_parse::Scrape;

/// Labels Prometheus attaches at scrape time: not in `/metrics`, but on every
/// series the dashboard queries.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Metric families the issue asks the dashboard to show: connections,
/// deliveries/s, slow-consumer closes, the publish-to-send latency histogram
/// and Kafka lag.
const REQUIRED: [&str; 5] = [
    "websocket_connections_total",
    "websocket_messages_sent_total",
    "websocket_slow_consumer_disconnects_total",
    "websocket_publish_to_send_seconds_bucket",
    "websocket_kafka_consumer_lag",
];

/// What `/metrics` exports: every sample name a query may use (from the
/// `# TYPE` lines, so a family with no series yet still counts) and the label
/// names seen on each one's series.
struct Exported {
    /// Queryable names: a counter `x` as `x_total`, a histogram `x` as
    /// `x_bucket`, `x_sum` and `x_count`, a gauge as itself.
    names: BTreeSet<String>,
    /// Label names per sample name, from the series in the scrape.
    labels: BTreeMap<String, BTreeSet<String>>,
}

impl Exported {
    fn from_exposition(text: &str) -> Exported {
        let mut names = BTreeSet::new();
        for line in text.lines() {
            let Some((family, kind)) = line
                .strip_prefix("# TYPE ")
                .and_then(|rest| rest.split_once(' '))
            else {
                continue;
            };
            match kind.trim() {
                "counter" => {
                    names.insert(format!("{}_total", family.trim_end_matches("_total")));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{family}{suffix}"));
                    }
                }
                _ => {
                    names.insert(family.to_owned());
                }
            }
        }
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("/metrics is valid Prometheus text");
        let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for sample in &scrape.samples {
            let entry = labels.entry(sample.metric.clone()).or_default();
            entry.extend(sample.labels.keys().map(|k| k.to_string()));
            // The parser folds histogram buckets into one sample; `le` is
            // the bucket label of `_bucket` series.
            if let prometheus_parse::Value::Histogram(_) = sample.value {
                labels
                    .entry(format!("{}_bucket", sample.metric))
                    .or_default()
                    .extend(
                        sample
                            .labels
                            .keys()
                            .map(|k| k.to_string())
                            .chain(["le".to_owned()]),
                    );
            }
        }
        Exported { names, labels }
    }
}

/// The metric names and label names one PromQL expression uses.
#[derive(Debug, Default, PartialEq)]
struct Uses {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

/// PromQL words that are neither metrics nor labels.
const KEYWORDS: [&str; 12] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
];

/// PromQL words followed by a list of label names in parentheses.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// PromQL aggregation operators, which may take `by (…)` before their
/// argument.
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Whether `rest` starts (after spaces) with `by` or `without`.
fn followed_by_grouping(rest: &[char]) -> bool {
    let word: String = rest
        .iter()
        .skip_while(|c| c.is_whitespace())
        .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
        .collect();
    word == "by" || word == "without"
}

/// Splits a PromQL expression (with Grafana's `$variables`) into the metric
/// names and label names it uses. Enough PromQL for dashboards: selectors
/// with matchers, range vectors, functions, aggregations with `by`/`without`,
/// arithmetic, numbers and strings.
fn promql_uses(expr: &str) -> Uses {
    let chars: Vec<char> = expr.chars().collect();
    let mut uses = Uses::default();
    let mut i = 0;
    // Inside `{…}` (matchers) or the parentheses after `by`/`without`, an
    // identifier is a label name.
    let mut in_matchers = false;
    let mut grouping_depth: Option<usize> = None;
    let mut depth = 0usize;
    let mut after_grouping_keyword = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '[' => {
                // A range or subquery duration: `[5m]`, `[$__rate_interval]`.
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
            }
            '{' => {
                in_matchers = true;
                i += 1;
            }
            '}' => {
                in_matchers = false;
                i += 1;
            }
            '(' => {
                depth += 1;
                if after_grouping_keyword {
                    grouping_depth = Some(depth);
                    after_grouping_keyword = false;
                }
                i += 1;
            }
            ')' => {
                if grouping_depth == Some(depth) {
                    grouping_depth = None;
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            '$' => {
                // A Grafana variable: `$job`, `${job}`, `$__rate_interval`.
                i += 1;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '{' | '}'))
                {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if in_matchers || grouping_depth.is_some() {
                    uses.labels.insert(word);
                } else if GROUPING.contains(&word.as_str()) {
                    // `by (…)`, `on (…)`, `group_left (…)`: label lists. A
                    // bare `group_left` has none.
                    after_grouping_keyword = next == Some(&'(');
                } else if KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                } else if next == Some(&'(') {
                    // A function or an aggregation.
                } else if AGGREGATIONS.contains(&word.as_str()) && followed_by_grouping(&chars[i..])
                {
                    // `sum by (…) (…)`, `max without (…) (…)`.
                } else {
                    uses.metrics.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    uses
}

/// Every query of the dashboard: panel targets (rows' nested panels too)
/// and the PromQL inside `label_values(…)` template variables, with the
/// label it lists.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((format!("panel {title:?}"), expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str());
        if variable["type"] == "query"
            && let Some(query) = query
        {
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .expect("template variables use label_values(expr, label)");
            let (expr, label) = inner.rsplit_once(',').expect("label_values(expr, label)");
            let name = variable["name"].as_str().unwrap_or("?");
            out.push((format!("variable ${name}"), expr.trim().to_owned()));
            out.push((
                format!("variable ${name} (label)"),
                format!("sum by ({}) (websocket_build_info)", label.trim()),
            ));
        }
    }
    out
}

/// The problems of one query against the export: unknown metric names, and
/// label names found on none of the series of the metrics it uses (checked
/// only when those metrics have series in the scrape).
fn query_problems(what: &str, expr: &str, exported: &Exported) -> Vec<String> {
    let uses = promql_uses(expr);
    let mut problems = Vec::new();
    if uses.metrics.is_empty() {
        problems.push(format!("{what}: no metric in {expr:?}"));
    }
    for metric in &uses.metrics {
        if !exported.names.contains(metric) {
            problems.push(format!(
                "{what}: {metric} is not exported by the server (in {expr:?})"
            ));
        }
    }
    let series_labels: Option<BTreeSet<&String>> = uses
        .metrics
        .iter()
        .map(|m| exported.labels.get(m))
        .collect::<Option<Vec<_>>>()
        .map(|sets| sets.into_iter().flatten().collect());
    if let Some(available) = series_labels {
        for label in &uses.labels {
            if !TARGET_LABELS.contains(&label.as_str()) && !available.contains(label) {
                problems.push(format!(
                    "{what}: label {label} is on no series of {:?} (in {expr:?})",
                    uses.metrics
                ));
            }
        }
    }
    problems
}

fn load_dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/ws-realtime.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_only_metrics_and_labels_the_server_exports() {
    let kafka = ws_realtime::source::embedded::EmbeddedKafka::start(&[("lines", 2)]).unwrap();
    let server = kafka_support::start_server(
        kafka.bootstrap_servers(),
        &[("WS_KAFKA_TOPICS", "lines"), ("WS_KAFKA_START", "earliest")],
    )
    .await;
    // One record through to one client, so the per-topic, per-partition and
    // per-source series exist and the latency histogram has an observation.
    let mut client = kafka_support::connect(server.address, "channels=lines").await;
    kafka
        .produce("lines", Some(b"AAPL"), br#"{"symbol":"AAPL","price":1}"#)
        .await
        .unwrap();
    assert_eq!(
        kafka_support::next_message(&mut client).await["channel"],
        "lines"
    );
    let metrics = server.observers.metrics.clone();
    let mut lag_seen = false;
    for _ in 0..500 {
        if metrics.encode().contains("websocket_kafka_consumer_lag{") {
            lag_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lag_seen, "a Kafka lag series within 10 s");

    let (status, body) =
        server_support::http_request(server.address, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    let exported = Exported::from_exposition(&String::from_utf8(body).unwrap());

    let dashboard = load_dashboard();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "only {} queries found", queries.len());
    let problems: Vec<String> = queries
        .iter()
        .flat_map(|(what, expr)| query_problems(what, expr, &exported))
        .collect();
    assert!(
        problems.is_empty(),
        "the dashboard does not match /metrics:\n{}",
        problems.join("\n")
    );

    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, expr)| promql_uses(expr).metrics)
        .collect();
    for required in REQUIRED {
        assert!(used.contains(required), "no panel shows {required}");
    }
    drop(client);
    server.shutdown().await.unwrap();
}

#[test]
fn the_check_reports_a_metric_or_label_the_server_does_not_export() {
    let exported = Exported::from_exposition(
        "# HELP websocket_connections_total Active\n\
         # TYPE websocket_connections_total gauge\n\
         websocket_connections_total 3\n\
         # HELP websocket_connections_closed Closed\n\
         # TYPE websocket_connections_closed counter\n\
         websocket_connections_closed_total{reason=\"shutdown\"} 1\n\
         # HELP websocket_publish_to_send_seconds Latency\n\
         # TYPE websocket_publish_to_send_seconds histogram\n\
         websocket_publish_to_send_seconds_sum 0.5\n\
         websocket_publish_to_send_seconds_count 1\n\
         websocket_publish_to_send_seconds_bucket{le=\"1.0\"} 1\n\
         websocket_publish_to_send_seconds_bucket{le=\"+Inf\"} 1\n",
    );
    let ok = |expr: &str| query_problems("test", expr, &exported);
    assert_eq!(
        ok(r#"sum by (instance) (websocket_connections_total{job=~"$job"})"#),
        Vec::<String>::new()
    );
    assert_eq!(
        ok("sum by (reason) (rate(websocket_connections_closed_total[$__rate_interval]))"),
        Vec::<String>::new()
    );
    assert_eq!(
        ok(
            "histogram_quantile(0.99, sum by (le) (rate(websocket_publish_to_send_seconds_bucket[5m])))"
        ),
        Vec::<String>::new()
    );
    // A typo, the family name of a counter without `_total`, and a label
    // the series do not carry.
    assert_eq!(
        ok("sum by (instance) (websocket_conections_total)").len(),
        1
    );
    assert_eq!(ok("sum(websocket_conections_total)").len(), 1);
    assert_eq!(
        ok("rate(websocket_connections_closed[5m])"),
        vec![
            "test: websocket_connections_closed is not exported by the server \
             (in \"rate(websocket_connections_closed[5m])\")"
                .to_owned()
        ]
    );
    assert_eq!(
        ok("sum by (topic) (websocket_connections_closed_total)").len(),
        1
    );
}

#[test]
fn promql_uses_separates_metrics_from_functions_labels_and_variables() {
    let uses = promql_uses(
        r#"histogram_quantile(0.9, sum without (pod) (rate(a_bucket{reason="x y",le!~"1|2"}[$__rate_interval]))) / on (instance) group_left b_total offset 5m + 2e3"#,
    );
    assert_eq!(
        uses.metrics,
        BTreeSet::from(["a_bucket".to_owned(), "b_total".to_owned()])
    );
    assert_eq!(
        uses.labels,
        BTreeSet::from([
            "pod".to_owned(),
            "reason".to_owned(),
            "le".to_owned(),
            "instance".to_owned()
        ])
    );
}
