//! The model-based randomized test (docs/correctness.md, "The model-based test").
//!
//! A seeded generator writes a script of random steps: activations (new grants, extensions,
//! overlapping grants from both sources), deactivations (naming a grant or not), redeliveries,
//! owner activations, SCIM faults, kills of the service, hand edits in AWS, cycles and pauses. The
//! script runs against the real service and the AWS SCIM emulator; then faults are cleared, every
//! short grant is left to end, and cycles run until nothing is pending. AWS must then hold exactly
//! what a small reference model of grants says, standing members untouched, nothing else changed.
//!
//! `PIMBRIDGE_MODEL_SEED=<n>` replays one seed, `PIMBRIDGE_MODEL_SEEDS=<n>` runs seeds 1..=n,
//! `PIMBRIDGE_MODEL_STEPS=<n>` sets the script length, and `PIMBRIDGE_MODEL_WITHOUT=<a,b>` switches
//! features off (see [`FEATURES`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use aws_scim_emulator::{Fault, RunningEmulator, DEFAULT_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::fixture::emulator;
use crate::helpers::*;
use crate::postgres::PgServer;

const ADMIN_TOKEN: &str = "model-admin-token-0123456789";
/// Seeds of the short batch.
const CI_SEEDS: [u64; 3] = [1, 2, 3];
const DEFAULT_STEPS: usize = 30;
/// Users in play; users below `KNOWN_USERS` exist in AWS before the run (Entra's own
/// provisioning put them there), so hand edits can name them and audit records can find them.
const USERS: usize = 6;
const KNOWN_USERS: usize = 3;
/// The two Entra groups of application `alpha` and their AWS names.
const GROUPS: [(&str, &str); 2] = [(GROUP_A, "AWS-Admins"), (GROUP_B, "AWS-ReadOnly")];
/// An AWS group pimbridge has no business with: it must stay as it was.
const BYSTANDERS: &str = "AWS-Bystanders";
const BYSTANDER: &str = "bystander@contoso.com";
const MAX_KILLS: usize = 2;
/// Ends of short grants are this close; long ones are minutes away, so at the final check every
/// grant is clearly ended or clearly running.
const SHORT_END_MS: (u64, u64) = (1000, 3000);
const LONG_END_SECS: (u64, u64) = (180, 900);
/// A bound on the cycles of the final phase.
const FINAL_CYCLES: usize = 8;

// ---------------------------------------------------------------------------------------------
// Randomness and switches

/// splitmix64: a tiny generator whose sequence is the same everywhere, so a seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the modulo bias is irrelevant at these sizes).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn index(&mut self, len: usize) -> usize {
        (self.next() % len as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }
}

/// Features the generator may use; `PIMBRIDGE_MODEL_WITHOUT` switches them off by name, to run
/// the harness against a service that lacks them or to narrow a divergence down.
const FEATURES: [&str; 6] = [
    // Our event's `grantId`, and audit records that name their PIM request: extensions and
    // deactivations that name one grant.
    "grant-ids",
    // Audit records of PIM *owner* activations (never memberships).
    "owners",
    // Audit activations of users AWS does not know yet (audit records carry no given or family
    // name to create them from).
    "audit-new-users",
    "faults",
    "kill",
    "hand-edits",
];

const ALL_ON: &str = "all features on";

#[derive(Debug, Clone, Copy)]
struct Features {
    grant_ids: bool,
    owners: bool,
    audit_new_users: bool,
    faults: bool,
    kill: bool,
    hand_edits: bool,
}

impl Features {
    fn from_env() -> Self {
        // Audit activations of users new to AWS need Graph to complete the user (docs/webhooks.md),
        // and the harness runs without Graph: off unless the variable says otherwise.
        let off: Vec<String> = std::env::var("PIMBRIDGE_MODEL_WITHOUT")
            .unwrap_or_else(|_| "audit-new-users".to_owned())
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        for name in &off {
            assert!(
                FEATURES.contains(&name.as_str()),
                "PIMBRIDGE_MODEL_WITHOUT: unknown feature `{name}`; known: {FEATURES:?}"
            );
        }
        let on = |name: &str| !off.iter().any(|o| o == name);
        Self {
            grant_ids: on("grant-ids"),
            owners: on("owners"),
            audit_new_users: on("audit-new-users"),
            faults: on("faults"),
            kill: on("kill"),
            hand_edits: on("hand-edits"),
        }
    }

    /// `PIMBRIDGE_MODEL_WITHOUT=… ` when a feature is off, else nothing: for replay commands.
    fn env_prefix(&self) -> String {
        match self.describe() {
            all if all == ALL_ON => String::new(),
            some => format!("{some} "),
        }
    }

    fn describe(&self) -> String {
        let off: Vec<&str> = [
            (self.grant_ids, "grant-ids"),
            (self.owners, "owners"),
            (self.audit_new_users, "audit-new-users"),
            (self.faults, "faults"),
            (self.kill, "kill"),
            (self.hand_edits, "hand-edits"),
        ]
        .iter()
        .filter(|(on, _)| !on)
        .map(|(_, name)| *name)
        .collect();
        if off.is_empty() {
            ALL_ON.to_owned()
        } else {
            format!("PIMBRIDGE_MODEL_WITHOUT={}", off.join(","))
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not `{v}`"))
    })
}

// ---------------------------------------------------------------------------------------------
// The script

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// `POST /v1/events`, our JSON event.
    Events,
    /// `POST /webhooks/audit`, Entra audit records.
    Audit,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Audit => "audit",
        }
    }

    fn other(self) -> Self {
        match self {
            Self::Events => Self::Audit,
            Self::Audit => Self::Events,
        }
    }
}

/// An activation's end, relative to when it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    None,
    ShortMs(u64),
    LongSecs(u64),
}

impl End {
    fn describe(self) -> String {
        match self {
            Self::None => "no end".to_owned(),
            Self::ShortMs(ms) => format!("ends +{:.1}s (short)", ms as f64 / 1000.0),
            Self::LongSecs(s) => format!("ends +{s}s"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum FaultPlan {
    Throttle { count: u64 },
    Error { status: u16, count: u64 },
    Slow { millis: u64, count: u64 },
    LostReply { count: u64, method: &'static str },
}

impl FaultPlan {
    fn fault(self) -> Fault {
        match self {
            Self::Throttle { count } => Fault::throttle(count, 1),
            Self::Error { status, count } => Fault::error(status, count),
            Self::Slow { millis, count } => Fault::latency(millis).times(count),
            Self::LostReply { count, method } => Fault::lost_reply(count).for_methods(&[method]),
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// A new grant, or (an existing grant id) an extension; an owner activation is no grant.
    Activate {
        source: Source,
        event: String,
        grant: String,
        user: usize,
        group: usize,
        end: End,
        extends: bool,
        owner: bool,
    },
    /// Ends the named grant, or every grant of the pair from the same source.
    Deactivate {
        source: Source,
        event: String,
        grant: Option<String>,
        user: usize,
        group: usize,
        expired_wording: bool,
    },
    /// Sends an earlier event step again, unchanged.
    Redeliver {
        step: usize,
    },
    Fault(FaultPlan),
    /// A member added by hand in AWS to a pair no grant has touched: standing access.
    HandAdd {
        user: usize,
        group: usize,
    },
    /// A member removed by hand in AWS: drift.
    HandRemove {
        user: usize,
        group: usize,
    },
    Kill,
    Cycle,
    Pause {
        millis: u64,
    },
}

fn user_label(user: usize) -> String {
    format!("u{user}")
}

fn group_label(group: usize) -> &'static str {
    GROUPS[group].1
}

impl Step {
    fn describe(&self) -> String {
        match self {
            Self::Activate {
                source,
                event,
                grant,
                user,
                group,
                end,
                extends,
                owner,
            } => {
                let what = match (owner, extends) {
                    (true, _) => "activate OWNER",
                    (false, true) => "extend",
                    (false, false) => "activate",
                };
                format!(
                    "{:<6} {what} {} {} grant={grant} event={event} {}",
                    source.name(),
                    user_label(*user),
                    group_label(*group),
                    end.describe()
                )
            }
            Self::Deactivate {
                source,
                event,
                grant,
                user,
                group,
                expired_wording,
            } => format!(
                "{:<6} deactivate {} {} {} event={event}{}",
                source.name(),
                user_label(*user),
                group_label(*group),
                grant.as_ref().map_or(
                    "(every grant of the pair from this source)".to_owned(),
                    |g| { format!("grant={g}") }
                ),
                if *expired_wording { " (expired)" } else { "" }
            ),
            Self::Redeliver { step } => format!("redeliver step {step}"),
            Self::Fault(plan) => format!("fault  {plan:?}"),
            Self::HandAdd { user, group } => format!(
                "AWS    hand-add {} {} (standing)",
                user_label(*user),
                group_label(*group)
            ),
            Self::HandRemove { user, group } => format!(
                "AWS    hand-remove {} {}",
                user_label(*user),
                group_label(*group)
            ),
            Self::Kill => "kill the service, start it again".to_owned(),
            Self::Cycle => "cycle".to_owned(),
            Self::Pause { millis } => format!("pause {millis} ms"),
        }
    }
}

/// A grant as the generator knows it (no clock: the script depends on the seed only).
struct Planned {
    source: Source,
    grant: String,
    user: usize,
    group: usize,
    end: End,
    deactivated: bool,
}

/// Writes a script of `steps` steps from `seed`.
fn generate(seed: u64, steps: usize, features: Features) -> Vec<Step> {
    let mut rng = Rng(seed);
    let mut script: Vec<Step> = Vec::with_capacity(steps);
    let mut grants: Vec<Planned> = Vec::new();
    let mut touched: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut standing: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut events: Vec<usize> = Vec::new();
    let mut kills = 0;
    let mut serial = 0;
    let mut next_id = |prefix: &str| {
        serial += 1;
        format!("{prefix}{seed}-{serial}")
    };
    let random_end = |rng: &mut Rng| match rng.range(0, 99) {
        0..=44 => End::ShortMs(rng.range(SHORT_END_MS.0, SHORT_END_MS.1)),
        45..=79 => End::LongSecs(rng.range(LONG_END_SECS.0, LONG_END_SECS.1)),
        _ => End::None,
    };
    // Weights of each kind of step; a kind that cannot be made now is drawn again.
    let kinds: [(&str, u64); 13] = [
        ("activate", 26),
        ("overlap", 7),
        ("extend", if features.grant_ids { 8 } else { 0 }),
        ("deactivate", 9),
        ("deactivate-grant", if features.grant_ids { 6 } else { 0 }),
        ("redeliver", 6),
        ("owner", if features.owners { 3 } else { 0 }),
        ("fault", if features.faults { 9 } else { 0 }),
        ("hand-add", if features.hand_edits { 3 } else { 0 }),
        ("hand-remove", if features.hand_edits { 4 } else { 0 }),
        ("kill", if features.kill { 2 } else { 0 }),
        ("cycle", 9),
        ("pause", 6),
    ];
    let total: u64 = kinds.iter().map(|(_, w)| w).sum();
    while script.len() < steps {
        let mut draw = rng.range(0, total - 1);
        let kind = kinds
            .iter()
            .find(|(_, w)| {
                if draw < *w {
                    true
                } else {
                    draw -= w;
                    false
                }
            })
            .map(|(k, _)| *k)
            .unwrap_or("cycle");
        let live = |grants: &[Planned]| -> Vec<usize> {
            (0..grants.len())
                .filter(|&i| !grants[i].deactivated)
                .collect()
        };
        let step = match kind {
            "activate" | "overlap" => {
                let (source, user, group) = match live(&grants) {
                    running if kind == "overlap" && !running.is_empty() => {
                        let g = &grants[rng.pick(&running)];
                        (g.source.other(), g.user, g.group)
                    }
                    _ => {
                        let source = if rng.chance(50) {
                            Source::Events
                        } else {
                            Source::Audit
                        };
                        let users = if source == Source::Audit && !features.audit_new_users {
                            KNOWN_USERS
                        } else {
                            USERS
                        };
                        (source, rng.index(users), rng.index(GROUPS.len()))
                    }
                };
                if source == Source::Audit && !features.audit_new_users && user >= KNOWN_USERS {
                    continue;
                }
                let event = next_id("e");
                let grant = if source == Source::Audit || features.grant_ids {
                    next_id("g")
                } else {
                    event.clone()
                };
                let end = random_end(&mut rng);
                grants.push(Planned {
                    source,
                    grant: grant.clone(),
                    user,
                    group,
                    end,
                    deactivated: false,
                });
                touched.insert((user, group));
                Step::Activate {
                    source,
                    event,
                    grant,
                    user,
                    group,
                    end,
                    extends: false,
                    owner: false,
                }
            }
            "extend" => {
                let candidates: Vec<usize> = live(&grants)
                    .into_iter()
                    .filter(|&i| grants[i].end != End::None)
                    .collect();
                if candidates.is_empty() {
                    continue;
                }
                // Prefer the newest grants: a short one is extended before it has ended.
                let i = candidates[candidates.len() - 1 - rng.index(candidates.len().min(3))];
                let end = match grants[i].end {
                    End::ShortMs(ms) if rng.chance(60) => End::ShortMs(ms + rng.range(300, 1500)),
                    End::ShortMs(_) => End::LongSecs(rng.range(LONG_END_SECS.0, LONG_END_SECS.1)),
                    End::LongSecs(s) => End::LongSecs(s + rng.range(60, 600)),
                    End::None => unreachable!("filtered out"),
                };
                grants[i].end = end;
                Step::Activate {
                    source: grants[i].source,
                    event: next_id("e"),
                    grant: grants[i].grant.clone(),
                    user: grants[i].user,
                    group: grants[i].group,
                    end,
                    extends: true,
                    owner: false,
                }
            }
            "deactivate" | "deactivate-grant" => {
                let running = live(&grants);
                let named = kind == "deactivate-grant";
                if named && running.is_empty() {
                    continue;
                }
                let (source, user, group, grant) =
                    if !running.is_empty() && (named || rng.chance(80)) {
                        let i = rng.pick(&running);
                        let g = &grants[i];
                        (g.source, g.user, g.group, named.then(|| g.grant.clone()))
                    } else {
                        let source = if rng.chance(50) {
                            Source::Events
                        } else {
                            Source::Audit
                        };
                        (source, rng.index(USERS), rng.index(GROUPS.len()), None)
                    };
                for g in grants.iter_mut().filter(|g| {
                    g.source == source
                        && g.user == user
                        && g.group == group
                        && grant.as_ref().is_none_or(|id| *id == g.grant)
                }) {
                    g.deactivated = true;
                }
                touched.insert((user, group));
                Step::Deactivate {
                    source,
                    event: next_id("e"),
                    grant,
                    user,
                    group,
                    expired_wording: source == Source::Audit && rng.chance(30),
                }
            }
            "redeliver" => {
                if events.is_empty() {
                    continue;
                }
                Step::Redeliver {
                    step: rng.pick(&events),
                }
            }
            "owner" => {
                let user = rng.index(if features.audit_new_users {
                    USERS
                } else {
                    KNOWN_USERS
                });
                let group = rng.index(GROUPS.len());
                touched.insert((user, group));
                Step::Activate {
                    source: Source::Audit,
                    event: next_id("e"),
                    grant: next_id("g"),
                    user,
                    group,
                    // Still running at the final check, where a wrong membership shows.
                    end: if rng.chance(50) {
                        End::None
                    } else {
                        End::LongSecs(rng.range(LONG_END_SECS.0, LONG_END_SECS.1))
                    },
                    extends: false,
                    owner: true,
                }
            }
            "fault" => Step::Fault(match rng.range(0, 3) {
                0 => FaultPlan::Throttle {
                    count: rng.range(1, 4),
                },
                1 => FaultPlan::Error {
                    status: rng.pick(&[500, 502, 503]),
                    count: rng.range(1, 4),
                },
                2 => FaultPlan::Slow {
                    millis: rng.range(100, 700),
                    count: rng.range(2, 6),
                },
                _ => FaultPlan::LostReply {
                    count: rng.range(1, 6),
                    method: rng.pick(&["PATCH", "PATCH", "POST"]),
                },
            }),
            "hand-add" => {
                let free: Vec<(usize, usize)> = (0..KNOWN_USERS)
                    .flat_map(|u| (0..GROUPS.len()).map(move |g| (u, g)))
                    .filter(|p| !touched.contains(p) && !standing.contains(p))
                    .collect();
                if free.is_empty() {
                    continue;
                }
                let (user, group) = rng.pick(&free);
                standing.insert((user, group));
                Step::HandAdd { user, group }
            }
            "hand-remove" => {
                let owned: Vec<(usize, usize)> = touched
                    .iter()
                    .copied()
                    .filter(|p| !standing.contains(p))
                    .collect();
                if owned.is_empty() {
                    continue;
                }
                let (user, group) = rng.pick(&owned);
                Step::HandRemove { user, group }
            }
            "kill" => {
                if kills == MAX_KILLS {
                    continue;
                }
                kills += 1;
                Step::Kill
            }
            "pause" => Step::Pause {
                millis: rng.range(50, 800),
            },
            _ => Step::Cycle,
        };
        if matches!(step, Step::Activate { .. } | Step::Deactivate { .. }) {
            events.push(script.len());
        }
        script.push(step);
    }
    script
}

// ---------------------------------------------------------------------------------------------
// The reference model

/// An event as it was sent, with the times it carried.
#[derive(Debug, Clone)]
struct Sent {
    source: Source,
    activation: bool,
    owner: bool,
    /// The grant it names: an activation's own, or the one a deactivation ends.
    grant: Option<String>,
    user: usize,
    group: usize,
    at: OffsetDateTime,
    ends: Option<OffsetDateTime>,
    body: Value,
}

#[derive(Debug, Clone)]
struct Grant {
    source: Source,
    id: String,
    user: usize,
    group: usize,
    start: OffsetDateTime,
    end: Option<OffsetDateTime>,
}

impl Grant {
    fn active(&self, now: OffsetDateTime) -> bool {
        self.start <= now && self.end.is_none_or(|end| now < end)
    }
}

/// The grants that events (in the order sent, redeliveries left out) leave behind.
fn grants_from(events: &[&Sent]) -> Vec<Grant> {
    let mut grants: Vec<Grant> = Vec::new();
    for e in events {
        if e.owner {
            continue;
        }
        if e.activation {
            let id = e.grant.clone().expect("an activation names its grant");
            match grants
                .iter_mut()
                .find(|g| g.source == e.source && g.id == id)
            {
                // An extension: a new end for the same grant.
                Some(g) => g.end = e.ends,
                None => grants.push(Grant {
                    source: e.source,
                    id,
                    user: e.user,
                    group: e.group,
                    start: e.at,
                    end: e.ends,
                }),
            }
            continue;
        }
        let ends = |g: &Grant| match &e.grant {
            Some(id) => g.source == e.source && g.id == *id,
            None => {
                g.source == e.source && g.user == e.user && g.group == e.group && g.start < e.at
            }
        };
        for g in grants.iter_mut().filter(|g| ends(g)) {
            g.end = Some(g.end.map_or(e.at, |end| end.min(e.at)));
        }
    }
    grants
}

// ---------------------------------------------------------------------------------------------
// Running a script

struct Run {
    seed: u64,
    features: Features,
    app: TestApp,
    emu: RunningEmulator,
    scim: reqwest::Client,
    started: Instant,
    last_stamp: OffsetDateTime,
    /// Per step: what was sent (event steps).
    sent: Vec<Option<Sent>>,
    /// Per step: what happened, for the report.
    notes: Vec<String>,
    /// HTTP refusals of events (the service must accept every event we send).
    refusals: Vec<String>,
    /// AWS ids of the users that exist before the run, and of the groups.
    known_users: Vec<String>,
    groups: Vec<String>,
    bystanders_before: BTreeSet<String>,
    faults: usize,
    kills: usize,
}

fn settings(database_url: &str, scim_url: &str) -> String {
    let groups = GROUPS
        .iter()
        .map(|(id, _)| format!("\"{id}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        internal_listen = "127.0.0.1:0"
        shutdown_timeout = "5s"
        workers = 2
        [database]
        url = "{database_url}"
        max_connections = 8
        connect_timeout = "2s"
        [intake]
        hmac_secret = "{HMAC_SECRET}"
        requests_per_second = 0
        [dispatch]
        enabled = true
        poll_interval = "1s"
        lease = "2s"
        max_attempts = 6
        [sync]
        enabled = true
        check_interval = "20ms"
        max_attempts = 5
        [admin]
        token = "{ADMIN_TOKEN}"
        # Off: the harness drives cycles through the admin API far faster than an operator.
        requests_per_second = 0
        [log]
        format = "pretty"
        level = "error"
        [applications.alpha]
        scim_url = "{scim_url}"
        scim_token = "{DEFAULT_TOKEN}"
        groups = [{groups}]
        activation_limit = 3
        requests_per_second = 200
        requests_burst = 50
        cycle_interval = "1h"
        "#
    )
}

fn principal(user: usize) -> String {
    format!("a0000000-0000-4000-8000-{user:012}")
}

fn user_name(user: usize) -> String {
    format!("model.user{user}@contoso.com")
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("formats")
}

/// A uuid-shaped id from a label, for audit records (their ids look like GUIDs).
fn guid(label: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 20) & 0xfff,
        h & 0xffff_ffff_ffff
    )
}

fn json_event(
    step: &Step,
    at: OffsetDateTime,
    ends: Option<OffsetDateTime>,
    grant_ids: bool,
) -> Value {
    let (kind, event, grant, user, group) = match step {
        Step::Activate {
            event,
            grant,
            user,
            group,
            ..
        } => ("activation", event, Some(grant), *user, *group),
        Step::Deactivate {
            event,
            grant,
            user,
            group,
            ..
        } => ("deactivation", event, grant.as_ref(), *user, *group),
        _ => unreachable!("only events are sent"),
    };
    let mut body = json!({
        "id": event,
        "type": kind,
        "occurredAt": rfc3339(at),
        "groupId": GROUPS[group].0,
        "principalId": principal(user),
        "user": {"userName": user_name(user), "givenName": "Model",
                 "familyName": format!("User{user}"), "displayName": format!("Model User {user}"),
                 "email": user_name(user)},
        "group": {"displayName": GROUPS[group].1},
    });
    if let Some(ends) = ends {
        body["endsAt"] = json!(rfc3339(ends));
    }
    // Without grant ids the grant is the event itself, and deactivations name no grant.
    if let (Some(grant), true) = (grant, grant_ids) {
        body["grantId"] = json!(grant);
    }
    body
}

fn audit_record(
    step: &Step,
    at: OffsetDateTime,
    ends: Option<OffsetDateTime>,
    grant_ids: bool,
) -> Value {
    let (activity, event, request, user, group, owner) = match step {
        Step::Activate {
            event,
            grant,
            user,
            group,
            owner,
            end,
            ..
        } => {
            let activity = if *end == End::None {
                "Add member to role in PIM completed (permanent)"
            } else {
                "Add member to role completed (PIM activation)"
            };
            (activity, event, Some(grant), *user, *group, *owner)
        }
        Step::Deactivate {
            event,
            grant,
            user,
            group,
            expired_wording,
            ..
        } => {
            let activity = if *expired_wording {
                "Remove member from role (PIM activation expired)"
            } else {
                "Remove member from role completed (PIM deactivate)"
            };
            (
                activity,
                event,
                grant.as_ref().filter(|_| grant_ids),
                *user,
                *group,
                false,
            )
        }
        _ => unreachable!("only events are sent"),
    };
    let role = if owner { "Owner" } else { "Member" };
    let mut targets = vec![
        json!({"id": guid(role), "displayName": role, "type": "Role",
                                  "modifiedProperties": []}),
    ];
    // The PIM request: an activation's own (its grant id); a deactivation carries the request of
    // the grant it ends, or none when it ends every grant of the pair.
    if let Some(request) = request {
        targets.push(
            json!({"id": guid(request), "displayName": "PIM request", "type": "Other",
                            "modifiedProperties": []}),
        );
    }
    targets.push(
        json!({"id": principal(user), "displayName": format!("Model User {user}"),
                        "type": "User", "userPrincipalName": user_name(user),
                        "modifiedProperties": []}),
    );
    targets.push(
        json!({"id": GROUPS[group].0, "displayName": GROUPS[group].1, "type": "Group",
                        "modifiedProperties": []}),
    );
    let mut details = vec![
        json!({"key": "RoleDefinitionOriginId", "value": role.to_lowercase()}),
        json!({"key": "StartTime", "value": rfc3339(at)}),
    ];
    if let Some(ends) = ends {
        details.push(json!({"key": "ExpirationTime", "value": rfc3339(ends)}));
    }
    let correlation = guid(&format!("correlation-{event}"));
    let suffix = if activity.starts_with("Add") {
        "activation"
    } else {
        "deactivate"
    };
    json!({"records": [{
        "time": rfc3339(at),
        "operationName": activity,
        "category": "AuditLogs",
        "correlationId": correlation,
        "properties": {
            "id": format!("PIM_{}_{suffix}", guid(event)),
            "category": "GroupManagement",
            "correlationId": correlation,
            "result": "success",
            "activityDisplayName": activity,
            "activityDateTime": rfc3339(at),
            "loggedByService": "PIM",
            "operationType": if activity.starts_with("Add") { "Add" } else { "Remove" },
            "initiatedBy": {"user": {"id": principal(user), "userPrincipalName": user_name(user)}},
            "targetResources": targets,
            "additionalDetails": details,
        }
    }]})
}

impl Run {
    async fn start(seed: u64, features: Features) -> Run {
        let emu = emulator().await;
        let scim = reqwest::Client::builder()
            .user_agent("aws-console-by-hand/1.0")
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let database_url = PgServer::shared().fresh_database().await;
        let mut run = Run {
            seed,
            features,
            app: spawn_killable_app(
                pimbridge::config::Settings::from_toml_str(&settings(
                    &database_url,
                    &emu.scim_base_url(),
                ))
                .expect("the model's settings are valid"),
                &database_url,
            )
            .await,
            emu,
            scim,
            started: Instant::now(),
            last_stamp: OffsetDateTime::UNIX_EPOCH,
            sent: Vec::new(),
            notes: Vec::new(),
            refusals: Vec::new(),
            known_users: Vec::new(),
            groups: Vec::new(),
            bystanders_before: BTreeSet::new(),
            faults: 0,
            kills: 0,
        };
        run.seed_aws().await;
        run.wait_for_a_finished_cycle().await;
        run.started = Instant::now();
        run
    }

    /// What AWS holds before pimbridge does anything: the first users (from Entra's own
    /// provisioning), both groups, and a group of someone else's with two members.
    async fn seed_aws(&mut self) {
        for user in 0..KNOWN_USERS {
            let body = json!({
                "userName": user_name(user), "externalId": principal(user),
                "name": {"givenName": "Model", "familyName": format!("User{user}")},
                "displayName": format!("Model User {user}"),
                "emails": [{"value": user_name(user), "type": "work", "primary": true}],
            });
            let id = self.scim_create("Users", body).await;
            self.known_users.push(id);
        }
        for (entra_id, name) in GROUPS {
            let id = self
                .scim_create(
                    "Groups",
                    json!({"displayName": name, "externalId": entra_id}),
                )
                .await;
            self.groups.push(id);
        }
        let bystander = self
            .scim_create(
                "Users",
                json!({"userName": BYSTANDER, "name": {"givenName": "By", "familyName": "Stander"},
                       "displayName": "By Stander"}),
            )
            .await;
        let group = self
            .scim_create("Groups", json!({"displayName": BYSTANDERS}))
            .await;
        for member in [&bystander, &self.known_users[0]] {
            self.emu.add_member(&group, member).unwrap();
        }
        self.bystanders_before = [BYSTANDER.to_owned(), user_name(0)].into();
    }

    async fn scim_create(&self, resource: &str, body: Value) -> String {
        let response = self
            .scim
            .post(format!("{}/{resource}", self.emu.scim_base_url()))
            .bearer_auth(DEFAULT_TOKEN)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "creating {body}");
        let created: Value = response.json().await.unwrap();
        created["id"].as_str().unwrap().to_owned()
    }

    fn elapsed(&self) -> String {
        format!("+{:.3}s", self.started.elapsed().as_secs_f64())
    }

    /// Now, to the millisecond, and later than any time sent before: events are dated in the
    /// order they are sent.
    fn stamp(&mut self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        let ms = OffsetDateTime::from_unix_timestamp_nanos(
            now.unix_timestamp_nanos() / 1_000_000 * 1_000_000,
        )
        .unwrap();
        let t = ms.max(self.last_stamp + time::Duration::milliseconds(1));
        self.last_stamp = t;
        t
    }

    async fn admin(&self, method: Method, path: &str) -> (u16, Value) {
        let response = self
            .app
            .http
            .request(method, format!("{}{path}", self.app.internal_address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn latest_cycle(&self) -> Option<Value> {
        let (_, body) = self
            .admin(Method::GET, "/admin/applications/alpha/cycles?limit=1")
            .await;
        body["cycles"].as_array().and_then(|c| c.first().cloned())
    }

    async fn wait_for_a_finished_cycle(&self) {
        let start = Instant::now();
        while self
            .latest_cycle()
            .await
            .is_none_or(|c| c["outcome"] == "running")
        {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no initial cycle"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks for a cycle through the admin API and waits until it has finished. A request made
    /// while another cycle runs may be overwritten when that one finishes: ask again.
    async fn cycle(&self) -> Value {
        let before = self
            .latest_cycle()
            .await
            .and_then(|c| c["id"].as_i64())
            .unwrap_or(0);
        let start = Instant::now();
        let mut asked: Option<Instant> = None;
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "seed {}: no cycle finished within 60 s",
                self.seed
            );
            if asked.is_none_or(|at| at.elapsed() > Duration::from_millis(1500)) {
                let (status, body) = self
                    .admin(Method::POST, "/admin/applications/alpha/cycles")
                    .await;
                assert_eq!(status, 202, "starting a cycle: {body}");
                asked = Some(Instant::now());
            }
            if let Some(c) = self.latest_cycle().await {
                if c["id"].as_i64().unwrap_or(0) > before {
                    if c["outcome"] != "running" {
                        return c;
                    }
                    asked = Some(Instant::now());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn queue(&self) -> (i64, i64) {
        let (_, app) = self.admin(Method::GET, "/admin/applications/alpha").await;
        let n = |lane: &str| app["queue"][lane].as_i64().unwrap_or(0);
        (n("immediate"), n("deferred"))
    }

    fn aws_user(&self, user: usize) -> Option<String> {
        let name = user_name(user);
        self.emu
            .state()
            .users
            .iter()
            .find(|u| u["userName"].as_str() == Some(name.as_str()))
            .and_then(|u| u["id"].as_str().map(str::to_owned))
    }

    async fn execute(&mut self, index: usize, step: &Step) {
        let mut note = format!("{} ", self.elapsed());
        match step {
            Step::Activate { source, .. } | Step::Deactivate { source, .. } => {
                note += &self.send_new(index, step, *source).await;
            }
            Step::Redeliver { step: earlier } => {
                let sent = self.sent[*earlier].clone().expect("an event step");
                let status = self.post(sent.source, &sent.body).await;
                note += &format!("HTTP {status}");
                if !(200..300).contains(&status) {
                    self.refusals
                        .push(format!("step {index} (redelivery): HTTP {status}"));
                }
            }
            Step::Fault(plan) => {
                self.emu.inject(plan.fault());
                self.faults += 1;
            }
            Step::HandAdd { user, group } => {
                self.emu
                    .add_member(&self.groups[*group], &self.known_users[*user])
                    .unwrap();
            }
            Step::HandRemove { user, group } => match self.aws_user(*user) {
                Some(id) => {
                    let was = self
                        .emu
                        .group_members(&self.groups[*group])
                        .unwrap_or_default()
                        .contains(&id);
                    self.emu.remove_member(&self.groups[*group], &id).unwrap();
                    note += if was { "removed" } else { "was not a member" };
                }
                None => note += "user not in AWS",
            },
            Step::Kill => {
                self.app.kill().await;
                self.app.start_again().await;
                self.kills += 1;
            }
            Step::Cycle => {
                let c = self.cycle().await;
                note += &format!(
                    "cycle {} {}: applied {} skipped {} failed {} retrying {}",
                    c["id"],
                    c["outcome"].as_str().unwrap_or("?"),
                    c["changesApplied"],
                    c["changesSkipped"],
                    c["changesFailed"],
                    c["changesRetrying"]
                );
            }
            Step::Pause { millis } => tokio::time::sleep(Duration::from_millis(*millis)).await,
        }
        self.notes.push(note);
        if self.sent.len() <= index {
            self.sent.resize(index + 1, None);
        }
    }

    /// Sends a new event step; returns a note for the report.
    async fn send_new(&mut self, index: usize, step: &Step, source: Source) -> String {
        let at = self.stamp();
        let (end, activation, owner, grant, user, group) = match step {
            Step::Activate {
                end,
                owner,
                grant,
                user,
                group,
                ..
            } => (*end, true, *owner, Some(grant.clone()), *user, *group),
            Step::Deactivate {
                grant, user, group, ..
            } => (
                End::None,
                false,
                false,
                grant.clone().filter(|_| self.features.grant_ids),
                *user,
                *group,
            ),
            _ => unreachable!("only events are sent"),
        };
        let ends = match end {
            End::None => None,
            End::ShortMs(ms) => Some(at + time::Duration::milliseconds(ms as i64)),
            End::LongSecs(s) => Some(at + time::Duration::seconds(s as i64)),
        };
        let body = match source {
            Source::Events => json_event(step, at, ends, self.features.grant_ids),
            Source::Audit => audit_record(step, at, ends, self.features.grant_ids),
        };
        let status = self.post(source, &body).await;
        if !(200..300).contains(&status) {
            self.refusals.push(format!("step {index}: HTTP {status}"));
        }
        let sent = Sent {
            source,
            activation,
            owner,
            grant,
            user,
            group,
            at,
            ends,
            body,
        };
        if self.sent.len() <= index {
            self.sent.resize(index + 1, None);
        }
        self.sent[index] = Some(sent);
        format!("HTTP {status}")
    }

    async fn post(&self, source: Source, body: &Value) -> u16 {
        let path = match source {
            Source::Events => "/v1/events",
            Source::Audit => "/webhooks/audit",
        };
        let bytes = body.to_string().into_bytes();
        let response = self
            .app
            .http
            .post(format!("{}{path}", self.app.address))
            .header("content-type", "application/json")
            .header(pimbridge::auth::hmac::SIGNATURE_HEADER, sign_now(&bytes))
            .body(bytes)
            .send()
            .await;
        match response {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Clears faults, lets every short grant end, then runs cycles until nothing is pending.
    async fn settle(&mut self) -> Vec<String> {
        self.emu.clear_faults();
        let horizon = OffsetDateTime::now_utc() + time::Duration::seconds(60);
        let last_short_end = self
            .sent
            .iter()
            .flatten()
            .filter_map(|s| s.ends)
            .filter(|end| *end < horizon)
            .max();
        if let Some(end) = last_short_end {
            let wait = end - OffsetDateTime::now_utc() + time::Duration::milliseconds(100);
            if wait.is_positive() {
                tokio::time::sleep(wait.unsigned_abs()).await;
            }
        }
        let mut log = Vec::new();
        for round in 0..FINAL_CYCLES {
            let start = Instant::now();
            while self.queue().await.0 > 0 && start.elapsed() < Duration::from_secs(15) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let c = self.cycle().await;
            let (immediate, deferred) = self.queue().await;
            let busy = ["changesApplied", "changesFailed", "changesRetrying"]
                .iter()
                .map(|k| c[k].as_i64().unwrap_or(0))
                .sum::<i64>();
            log.push(format!(
                "final cycle {}: {} applied {} skipped {} failed {} retrying {}; queue immediate {immediate} deferred {deferred}",
                c["id"], c["outcome"].as_str().unwrap_or("?"), c["changesApplied"],
                c["changesSkipped"], c["changesFailed"], c["changesRetrying"]
            ));
            if round > 0 && busy == 0 && immediate == 0 && deferred == 0 {
                break;
            }
        }
        log
    }

    /// AWS as group name → member userNames.
    fn aws_memberships(&self) -> BTreeMap<String, BTreeSet<String>> {
        let state = self.emu.state();
        let names: BTreeMap<&str, &str> = state
            .users
            .iter()
            .filter_map(|u| Some((u["id"].as_str()?, u["userName"].as_str()?)))
            .collect();
        state
            .groups
            .iter()
            .map(|g| {
                let members = g
                    .members
                    .iter()
                    .map(|id| {
                        names
                            .get(id.as_str())
                            .map_or(id.clone(), |n| (*n).to_owned())
                    })
                    .collect();
                (g.display_name.clone(), members)
            })
            .collect()
    }
}

/// What happened to one seed.
struct Outcome {
    seed: u64,
    events: usize,
    faults: usize,
    kills: usize,
    seconds: f64,
    divergence: Option<String>,
}

async fn run_seed(seed: u64, steps: usize, features: Features) -> Outcome {
    let clock = Instant::now();
    let script = generate(seed, steps, features);
    let mut run = Run::start(seed, features).await;
    for (index, step) in script.iter().enumerate() {
        run.execute(index, step).await;
    }
    let final_log = run.settle().await;
    let now = OffsetDateTime::now_utc();
    let actual = run.aws_memberships();

    // The reference model.
    let events: Vec<&Sent> = run
        .sent
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(script[*i], Step::Redeliver { .. }))
        .filter_map(|(_, s)| s.as_ref())
        .collect();
    let grants = grants_from(&events);
    let standing: BTreeSet<(usize, usize)> = script
        .iter()
        .filter_map(|s| match s {
            Step::HandAdd { user, group } => Some((*user, *group)),
            _ => None,
        })
        .collect();
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (group, (_, name)) in GROUPS.iter().enumerate() {
        let members = (0..USERS)
            .filter(|&user| {
                standing.contains(&(user, group))
                    || grants
                        .iter()
                        .any(|g| g.user == user && g.group == group && g.active(now))
            })
            .map(user_name)
            .collect();
        expected.insert((*name).to_owned(), members);
    }
    expected.insert(BYSTANDERS.to_owned(), run.bystanders_before.clone());

    let divergence = (expected != actual || !run.refusals.is_empty()).then(|| {
        report(
            &run, &script, &grants, &standing, &expected, &actual, &final_log, now,
        )
    });
    let outcome = Outcome {
        seed,
        events: events.len(),
        faults: run.faults,
        kills: run.kills,
        seconds: clock.elapsed().as_secs_f64(),
        divergence,
    };
    run.app.stop().await;
    run.emu.stop().await;
    outcome
}

#[allow(clippy::too_many_arguments)]
fn report(
    run: &Run,
    script: &[Step],
    grants: &[Grant],
    standing: &BTreeSet<(usize, usize)>,
    expected: &BTreeMap<String, BTreeSet<String>>,
    actual: &BTreeMap<String, BTreeSet<String>>,
    final_log: &[String],
    now: OffsetDateTime,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "DIVERGENCE seed {seed} ({features}); replay with\n  PIMBRIDGE_MODEL_SEED={seed} \
         PIMBRIDGE_MODEL_STEPS={steps} {without}cargo test --test api model:: -- --include-ignored --nocapture",
        seed = run.seed,
        features = run.features.describe(),
        steps = script.len(),
        without = run.features.env_prefix(),
    );
    let _ = writeln!(out, "users: u<n> = {}", user_name(0).replace('0', "<n>"));
    let _ = writeln!(out, "script:");
    for (i, step) in script.iter().enumerate() {
        let note = run.notes.get(i).map_or("", String::as_str);
        let at = run
            .sent
            .get(i)
            .and_then(Option::as_ref)
            .map_or(String::new(), |s| format!(" @{}", rfc3339(s.at)));
        let _ = writeln!(out, "  {i:>3} {}{at}  [{note}]", step.describe());
    }
    for line in final_log {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "model at {} (standing: {standing:?}):", rfc3339(now));
    for g in grants {
        let _ = writeln!(
            out,
            "  {:<6} grant {} {} {} start {} end {} {}",
            g.source.name(),
            g.id,
            user_label(g.user),
            group_label(g.group),
            rfc3339(g.start),
            g.end.map_or("none".to_owned(), rfc3339),
            if g.active(now) { "ACTIVE" } else { "ended" }
        );
    }
    for refusal in &run.refusals {
        let _ = writeln!(out, "refused: {refusal}");
    }
    let groups: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    for group in groups {
        let want = expected.get(group).cloned().unwrap_or_default();
        let have = actual.get(group).cloned().unwrap_or_default();
        let mark = if want == have { "ok  " } else { "DIFF" };
        let _ = writeln!(out, "{mark} {group}: expected {want:?}");
        let _ = writeln!(out, "     {group}: actual   {have:?}");
        if want != have {
            let _ = writeln!(
                out,
                "     missing {:?}, unexpected {:?}",
                want.difference(&have).collect::<Vec<_>>(),
                have.difference(&want).collect::<Vec<_>>()
            );
        }
    }
    out
}

/// Runs `seeds` and fails with every divergence found.
async fn run_batch(seeds: Vec<u64>) {
    let steps = env_number("PIMBRIDGE_MODEL_STEPS").map_or(DEFAULT_STEPS, |n| n as usize);
    let features = Features::from_env();
    let mut failed = Vec::new();
    for seed in seeds {
        let o = run_seed(seed, steps, features).await;
        println!(
            "model seed {}: {} events, {} faults, {} kills, {:.1}s: {}",
            o.seed,
            o.events,
            o.faults,
            o.kills,
            o.seconds,
            if o.divergence.is_some() {
                "DIVERGED"
            } else {
                "ok"
            }
        );
        if let Some(text) = o.divergence {
            println!("{text}");
            failed.push(o.seed);
        }
    }
    assert!(
        failed.is_empty(),
        "AWS diverged from the model for seeds {failed:?} ({}); the report of each is printed above",
        features.describe()
    );
}

fn chosen_seeds() -> Vec<u64> {
    if let Some(seed) = env_number("PIMBRIDGE_MODEL_SEED") {
        return vec![seed];
    }
    match env_number("PIMBRIDGE_MODEL_SEEDS") {
        Some(n) => (1..=n).collect(),
        None => CI_SEEDS.to_vec(),
    }
}

#[tokio::test]
async fn aws_matches_the_grant_model_after_random_interleavings_and_faults() {
    run_batch(chosen_seeds()).await;
}

#[test]
fn a_seed_always_writes_the_same_script() {
    let features = Features::from_env();
    let a: Vec<String> = generate(42, 60, features)
        .iter()
        .map(Step::describe)
        .collect();
    let b: Vec<String> = generate(42, 60, features)
        .iter()
        .map(Step::describe)
        .collect();
    let c: Vec<String> = generate(43, 60, features)
        .iter()
        .map(Step::describe)
        .collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn the_model_keeps_a_pair_while_any_grant_from_any_source_runs() {
    let t0 = OffsetDateTime::now_utc();
    let s = |secs: i64| t0 + time::Duration::seconds(secs);
    let event = |source, activation, grant: Option<&str>, at, ends| Sent {
        source,
        activation,
        owner: false,
        grant: grant.map(str::to_owned),
        user: 0,
        group: 0,
        at,
        ends,
        body: Value::Null,
    };
    let long = event(Source::Events, true, Some("long"), s(0), Some(s(600)));
    let short = event(Source::Audit, true, Some("short"), s(1), Some(s(3)));
    let extended = event(Source::Audit, true, Some("short"), s(2), Some(s(900)));
    let audit_off = event(Source::Audit, false, None, s(4), None);
    let named_off = event(Source::Events, false, Some("long"), s(5), None);

    let active = |events: &[&Sent], at| grants_from(events).iter().any(|g| g.active(at));

    assert!(active(&[&long, &short], s(10)), "the long grant still runs");
    assert!(!active(&[&short], s(10)), "the short grant alone has ended");
    assert!(
        active(&[&short, &extended], s(10)),
        "an extension moves the end"
    );
    assert!(
        active(&[&long, &short, &extended, &audit_off], s(10)),
        "an audit deactivation ends audit grants only"
    );
    assert!(!active(
        &[&long, &short, &extended, &audit_off, &named_off],
        s(10)
    ));
    let late = event(Source::Events, true, Some("late"), s(6), None);
    let all_off = event(Source::Events, false, None, s(7), None);
    assert!(
        !active(&[&long, &late, &all_off], s(10)),
        "an unnamed deactivation ends every earlier grant of its source"
    );
    let after = event(Source::Events, true, Some("after"), s(8), None);
    assert!(active(&[&long, &all_off, &after], s(10)));
}
