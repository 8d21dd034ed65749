//! `docs/metrics.txt` — the list of metric families and labels that the Grafana dashboard and the
//! alerts are checked against (scripts/check_dashboard.py) — matches what pimbridge exports.
//!
//! A test app does a bit of everything (an immediate and a deferred activation, an unrouted event,
//! drift repaired by a cycle, a request over the inbound rate limit), so that every labelled
//! family has a series; then every exported family must be listed with exactly its type and
//! labels, and every listed family must be exported, except those marked `pending` (being added
//! by a change in flight; once exported they are held to their labels like the others).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use crate::fixture::*;
use crate::helpers::*;
use crate::postgres::PgServer;

/// One metric family: its type and label names (without `le`, which histograms add).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
}

/// The families of docs/metrics.txt, and which of them are pending.
fn catalogue() -> (BTreeMap<String, Family>, BTreeSet<String>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.txt");
    let text = std::fs::read_to_string(path).expect("docs/metrics.txt");
    let mut families = BTreeMap::new();
    let mut pending = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, rest) = line
            .split_once('}')
            .unwrap_or_else(|| panic!("docs/metrics.txt: no {{labels}} in {line:?}"));
        let (name, labels) = head
            .split_once('{')
            .unwrap_or_else(|| panic!("docs/metrics.txt: no {{labels}} in {line:?}"));
        let words: Vec<&str> = rest.split_whitespace().collect();
        let kind = words
            .first()
            .unwrap_or_else(|| panic!("no type in {line:?}"));
        if words.get(1) == Some(&"pending") {
            pending.insert(name.to_owned());
        }
        let labels = labels
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let family = Family {
            kind: (*kind).to_owned(),
            labels,
        };
        assert!(
            families.insert(name.to_owned(), family).is_none(),
            "docs/metrics.txt lists {name} twice"
        );
    }
    (families, pending)
}

/// The families of a Prometheus text exposition, with the union of the labels of their series.
fn exported(exposition: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            families.entry(name.to_owned()).or_insert(Family {
                kind: kind.to_owned(),
                labels: BTreeSet::new(),
            });
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).expect("a sample line");
        let sample = &line[..end];
        let family = [sample, "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let name = if *suffix == sample {
                    sample
                } else {
                    sample.strip_suffix(suffix)?
                };
                families.contains_key(name).then(|| name.to_owned())
            })
            .unwrap_or_else(|| panic!("a sample of no declared family: {line}"));
        if line[end..].starts_with('{') {
            let close = line.rfind('}').expect("closing brace");
            for pair in split_labels(&line[end + 1..close]) {
                let label = pair.split_once('=').expect("label=value").0.trim();
                if label != "le" {
                    families
                        .get_mut(&family)
                        .unwrap()
                        .labels
                        .insert(label.to_owned());
                }
            }
        }
    }
    families
}

/// `a="x",b="y,z"` → [`a="x"`, `b="y,z"`]: commas inside quoted values do not split.
fn split_labels(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            '\\' if quoted && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        escaped = false;
    }
    if start < text.len() {
        parts.push(&text[start..]);
    }
    parts
}

#[tokio::test]
async fn docs_metrics_txt_lists_exactly_what_pimbridge_exports() {
    // Arrange: one immediate slot per window; both lanes, an unrouted event.
    let f = spawn_with_cycles(|app| app.activation_limit = 1).await;
    let response = f
        .app
        .post_events(&json!([
            activation("cat-1", GROUP_A, "cat-user-1"),
            activation("cat-2", GROUP_A, "cat-user-2"),
            activation("cat-3", GROUP_UNKNOWN, "cat-user-3"),
        ]))
        .await;
    assert_eq!(response.status(), 202);
    wait_for_no_pending(&f.app, Duration::from_secs(10)).await;

    // Someone removes the immediate member in AWS: the cycle finds and repairs the drift.
    let group =
        f.a.state()
            .groups
            .into_iter()
            .find(|g| g.display_name == AWS_GROUP)
            .expect("the group was created");
    let member = group.members.first().expect("one member").clone();
    f.a.remove_member(&group.id, &member).unwrap();
    run_cycle(&f.app, "alpha").await;

    // A second app, with a limit of one request, refuses the second with 429.
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.intake.requests_per_second = 1;
    settings.intake.requests_burst = 1;
    let limited = spawn_app_with(settings, &url).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let body = json!(activation(&format!("lim-{i}"), GROUP_A, "lim"));
        statuses.push(limited.post_events(&body).await.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");

    // Act: scrape both.
    let mut live = exported(&f.app.metrics().await);
    for (name, family) in exported(&limited.scrape().await) {
        let entry = live.entry(name).or_insert(family.clone());
        entry.labels.extend(family.labels);
    }
    let (listed, pending) = catalogue();

    // Assert: every exported family is listed, with its type and exactly its labels …
    let mut wrong = Vec::new();
    for (name, family) in &live {
        match listed.get(name) {
            None => wrong.push(format!(
                "{name}{{{}}} {} is exported but not in docs/metrics.txt",
                family.labels.iter().cloned().collect::<Vec<_>>().join(","),
                family.kind
            )),
            Some(entry) if entry != family => wrong.push(format!(
                "{name}: docs/metrics.txt says {entry:?}, /metrics has {family:?}"
            )),
            Some(_) => {}
        }
    }
    // … and every listed family is exported, unless it is still pending.
    for name in listed.keys() {
        if !live.contains_key(name) && !pending.contains(name) {
            wrong.push(format!("{name} is in docs/metrics.txt but not exported"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let waiting: Vec<&String> = pending.iter().filter(|n| !live.contains_key(*n)).collect();
    if !waiting.is_empty() {
        println!("pending in docs/metrics.txt, not exported yet: {waiting:?}");
    }
}

#[test]
fn labels_are_split_outside_quotes_only() {
    assert_eq!(
        split_labels(r#"a="x",b="y,\"z\"",c="""#),
        vec![r#"a="x""#, r#"b="y,\"z\"""#, r#"c="""#]
    );
}
