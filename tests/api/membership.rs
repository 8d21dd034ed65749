//! Membership truth (docs/correctness.md): after a fault and the next cycle, AWS holds exactly the
//! desired state for what pimbridge owns, and nothing else changed. One test per failure the old
//! "newest event decides" model had.

use std::time::Duration;

use aws_scim_emulator::{Fault, RunningEmulator, DEFAULT_TOKEN};
use serde_json::{json, Value};

use crate::fixture::*;
use crate::helpers::*;

/// The AWS id of the user the test events create for `principal` (userName `<principal>@contoso.com`).
fn aws_user(emulator: &RunningEmulator, principal: &str) -> Option<String> {
    let user_name = format!("{principal}@contoso.com");
    emulator
        .state()
        .users
        .iter()
        .find(|u| u["userName"] == user_name.as_str())
        .and_then(|u| u["id"].as_str().map(str::to_owned))
}

fn aws_group(emulator: &RunningEmulator) -> Option<String> {
    emulator
        .state()
        .groups
        .iter()
        .find(|g| g.display_name == AWS_GROUP)
        .map(|g| g.id.clone())
}

fn is_member(emulator: &RunningEmulator, principal: &str) -> bool {
    aws_user(emulator, principal).is_some_and(|id| {
        emulator
            .group_members_by_name(AWS_GROUP)
            .unwrap_or_default()
            .contains(&id)
    })
}

/// An SCIM request made directly in AWS (an administrator's edit in the console, say).
async fn aws_request(
    emulator: &RunningEmulator,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Value {
    let response = reqwest::Client::new()
        .request(method, format!("{}/{path}", emulator.scim_base_url()))
        .bearer_auth(DEFAULT_TOKEN)
        .header("user-agent", "aws-console")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap_or(Value::Null)
}

/// Removes `principal` from the group directly in AWS.
async fn remove_in_aws(emulator: &RunningEmulator, principal: &str) {
    let (group, user) = (
        aws_group(emulator).unwrap(),
        aws_user(emulator, principal).unwrap(),
    );
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": format!("members[value eq \"{user}\"]")}]});
    aws_request(
        emulator,
        reqwest::Method::PATCH,
        &format!("Groups/{group}"),
        patch,
    )
    .await;
}

/// Creates the user and the group directly in AWS and makes the user a member: a standing member
/// pimbridge never added.
async fn standing_member_in_aws(emulator: &RunningEmulator, principal: &str) {
    let user = aws_request(
        emulator,
        reqwest::Method::POST,
        "Users",
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
               "userName": format!("{principal}@contoso.com"), "displayName": "Standing Member",
               "name": {"givenName": "Standing", "familyName": "Member"},
               "externalId": principal}),
    )
    .await;
    let group = match aws_group(emulator) {
        Some(id) => id,
        None => aws_request(
            emulator,
            reqwest::Method::POST,
            "Groups",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                   "displayName": AWS_GROUP}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned(),
    };
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}]});
    aws_request(
        emulator,
        reqwest::Method::PATCH,
        &format!("Groups/{group}"),
        patch,
    )
    .await;
}

/// An event for `principal` in GROUP_A.
fn event(kind: &str, id: &str, principal: &str, occurred: i64, ends: Option<i64>) -> Value {
    let mut event = if kind == "activation" {
        activation(id, GROUP_A, principal)
    } else {
        deactivation(id, GROUP_A, principal)
    };
    event["occurredAt"] = json!(at(occurred));
    match ends {
        Some(ends) => event["endsAt"] = json!(at(ends)),
        None => {
            if let Some(object) = event.as_object_mut() {
                object.remove("endsAt");
            }
        }
    }
    event
}

#[tokio::test]
async fn an_add_whose_reply_was_lost_is_still_removed_after_a_deactivation() {
    // Arrange: every PATCH reaches AWS but its reply is lost, so the immediate job never learns
    // that the add happened and fails after its attempts.
    let f = spawn_with_cycles(|_| {}).await;
    f.a.inject(Fault::lost_reply(100).for_methods(&["PATCH"]));
    f.app
        .post_events(&event("activation", "lost-1", "lost", -60, Some(3600)))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(20)).await;
    assert!(is_member(&f.a, "lost"), "the add reached AWS");
    f.a.clear_faults();

    // Act: the user deactivates; the next cycle runs.
    f.app
        .post_events(&event("deactivation", "lost-2", "lost", 0, None))
        .await;
    run_cycle(&f.app, "alpha").await;

    // Assert: no access is left behind.
    assert!(!is_member(&f.a, "lost"));
}

#[tokio::test]
async fn a_membership_removed_by_hand_is_put_back_while_its_grant_runs() {
    // Arrange: one immediate slot; the first activation is added at once.
    let f = spawn_with_cycles(|app| app.activation_limit = 1).await;
    f.app
        .post_events(&event("activation", "re-1", "again", -60, Some(3600)))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    assert!(is_member(&f.a, "again"));

    // Act: someone removes the member in AWS; a later (deferred) activation arrives; a cycle runs.
    remove_in_aws(&f.a, "again").await;
    f.app
        .post_events(&event("activation", "re-2", "again", -10, Some(7200)))
        .await;
    run_cycle(&f.app, "alpha").await;

    // Assert: the activation is not dropped as "already reflected"; drift was counted.
    assert!(is_member(&f.a, "again"));
    let drift = metric_value(
        &f.app.metrics().await,
        "pimbridge_drift_total",
        &[("application", "alpha"), ("kind", "missing")],
    );
    assert_eq!(drift, 1.0);
}

#[tokio::test]
async fn the_end_of_a_short_grant_leaves_an_overlapping_long_one_in_force() {
    // Arrange: a long grant, then a newer short one for the same user and group.
    let f = spawn_with_cycles(|_| {}).await;
    f.app
        .post_events(&event("activation", "long", "both", -120, Some(8 * 3600)))
        .await;
    f.app
        .post_events(&event("activation", "short", "both", -60, Some(1)))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    assert!(is_member(&f.a, "both"));

    // Act: the short grant ends; a cycle runs.
    age_grants(&f.app, 2.0).await;
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert: the long grant still runs, so the user keeps access and nothing was removed.
    assert!(is_member(&f.a, "both"));
    assert_eq!(cycle.applied, 0);
    assert!(!f.a.request_log().iter().any(|r| r.method == "PATCH"
        && r.body
            .as_ref()
            .is_some_and(|b| b.to_string().contains("remove"))));
}

#[tokio::test]
async fn a_member_aws_held_before_pimbridge_is_never_removed() {
    // Arrange: a standing member in AWS (added by hand or by Entra's own provisioning job).
    let f = spawn_with_cycles(|_| {}).await;
    standing_member_in_aws(&f.a, "perm").await;

    // Act: the user also activates through PIM, then deactivates; a cycle runs.
    f.app
        .post_events(&event("activation", "perm-1", "perm", -60, Some(3600)))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    f.app
        .post_events(&event("deactivation", "perm-2", "perm", 0, None))
        .await;
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert: standing access stays; the log says why nothing was removed.
    assert!(is_member(&f.a, "perm"));
    assert_eq!(cycle.applied, 0);
    let reason: String = f
        .app
        .db
        .query_one(
            "SELECT reason FROM provisioning_log WHERE principal_id = 'perm' AND action = 'remove'
             ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("standing"), "{reason}");
}

#[tokio::test]
async fn a_deactivation_never_removes_a_member_pimbridge_did_not_add() {
    // Arrange: a member pimbridge has never seen an activation for.
    let f = spawn_with_cycles(|_| {}).await;
    standing_member_in_aws(&f.a, "hand").await;

    // Act
    f.app
        .post_events(&event("deactivation", "hand-1", "hand", 0, None))
        .await;
    run_cycle(&f.app, "alpha").await;

    // Assert
    assert!(is_member(&f.a, "hand"));
}

#[tokio::test]
async fn an_activation_without_an_end_expires_after_the_longest_grant() {
    // Arrange: grants last at most 2 s in this application.
    let f = spawn_with_cycles(|app| app.max_grant_duration = Duration::from_secs(2)).await;
    f.app
        .post_events(&event("activation", "open-1", "open", 0, None))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    assert!(is_member(&f.a, "open"));

    // Act: the bound passes; a cycle runs.
    age_grants(&f.app, 3.0).await;
    run_cycle(&f.app, "alpha").await;

    // Assert: removed, and the grant says why it ended when it did.
    assert!(!is_member(&f.a, "open"));
    let note: String = f
        .app
        .db
        .query_one("SELECT note FROM grants WHERE grant_key = 'open-1'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(note.contains("max_grant_duration"), "{note}");
}

#[tokio::test]
async fn an_end_beyond_the_longest_grant_is_shortened_and_noted() {
    let f = spawn_with_cycles(|app| app.max_grant_duration = Duration::from_secs(3600)).await;
    f.app
        .post_events(&event(
            "activation",
            "far-1",
            "far",
            0,
            Some(30 * 24 * 3600),
        ))
        .await;
    let (hours, note): (f64, String) = {
        let row = f
            .app
            .db
            .query_one(
                "SELECT (extract(epoch FROM ends_at - now()) / 3600)::float8, note FROM grants
                 WHERE grant_key = 'far-1'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(hours <= 1.0 && hours > 0.9, "{hours}");
    assert!(note.contains("max_grant_duration"), "{note}");
}

#[tokio::test]
async fn a_targeted_deactivation_ends_only_the_grant_it_names() {
    // Arrange: two grants of one pair from the same source, named by grantId.
    let f = spawn_with_cycles(|_| {}).await;
    let mut one = event("activation", "g-1", "named", -120, Some(3600));
    one["grantId"] = json!("instance-1");
    let mut two = event("activation", "g-2", "named", -60, Some(3600));
    two["grantId"] = json!("instance-2");
    f.app.post_events(&json!([one, two])).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;

    // Act: the first grant is deactivated by name.
    let mut off = event("deactivation", "g-3", "named", 0, None);
    off["grantId"] = json!("instance-1");
    f.app.post_events(&off).await;
    run_cycle(&f.app, "alpha").await;

    // Assert: the second grant still runs.
    assert!(is_member(&f.a, "named"));

    // Act: an untargeted deactivation ends every grant that started before it.
    f.app
        .post_events(&event("deactivation", "g-4", "named", 0, None))
        .await;
    run_cycle(&f.app, "alpha").await;
    assert!(!is_member(&f.a, "named"));
}

#[tokio::test]
async fn a_cycle_checks_many_pairs_of_one_group_with_one_listing_and_still_finds_drift() {
    // Arrange: twelve members pimbridge owns; one is removed by hand in AWS.
    let f = spawn_with_cycles(|app| app.activation_limit = 20).await;
    f.app.post_events(&activations("many", GROUP_A, 12)).await;
    wait_for_no_pending(&f.app, Duration::from_secs(10)).await;
    assert_eq!(members(&f.a), 12);
    remove_in_aws(&f.a, "many-user-3").await;
    f.a.clear_request_log();

    // Act
    run_cycle(&f.app, "alpha").await;

    // Assert: put back; the check was one listing of the group, not a request per member.
    assert_eq!(members(&f.a), 12);
    let gets: Vec<String> =
        f.a.request_log()
            .iter()
            .filter(|r| r.method == "GET")
            .map(|r| r.path.clone())
            .collect();
    assert!(
        gets.len() <= 2,
        "one listing (and its last page), not twelve checks: {gets:?}"
    );
    let drift = metric_value(
        &f.app.metrics().await,
        "pimbridge_drift_total",
        &[("application", "alpha"), ("kind", "missing")],
    );
    assert_eq!(drift, 1.0);
}

/// The requests AWS saw, as `METHOD path` with `?filter` when the request had one.
fn requests_seen(emulator: &RunningEmulator) -> Vec<String> {
    emulator
        .request_log()
        .iter()
        .map(|r| {
            let filter = if r.query.contains("members") {
                "?members"
            } else {
                ""
            };
            let resource = r
                .path
                .split('/')
                .find(|s| *s == "Users" || *s == "Groups")
                .unwrap_or("");
            format!("{} {resource}{filter}", r.method)
        })
        .collect()
}

#[tokio::test]
async fn a_user_aws_creates_now_is_added_without_a_look_up_and_a_known_pair_costs_one_patch() {
    // Arrange: the group is already in AWS and cached (a first user went through).
    let f = spawn_with_cycles(|_| {}).await;
    f.app
        .post_events(&event("activation", "first-1", "first", -60, Some(3600)))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    f.a.clear_request_log();

    // Act: a user AWS has never seen activates; then the same pair again (an extension).
    f.app
        .post_events(&event("activation", "new-1", "new", -30, Some(3600)))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    let new_user = requests_seen(&f.a);
    f.a.clear_request_log();
    f.app
        .post_events(&event("activation", "new-2", "new", -10, Some(7200)))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    let known_pair = requests_seen(&f.a);

    // Assert: a user created now is in no group, so nothing asks AWS whether it is a member.
    assert!(is_member(&f.a, "new"));
    assert_eq!(new_user, ["POST Users", "PATCH Groups"], "{new_user:?}");
    assert_eq!(known_pair, ["PATCH Groups"], "{known_pair:?}");
}

#[tokio::test]
async fn a_targeted_deactivation_does_not_end_another_grant_delivered_after_it() {
    // Arrange: grant instance-1 is activated and deactivated by name.
    let f = spawn_with_cycles(|_| {}).await;
    let mut one = event("activation", "late-1", "late", -120, Some(3600));
    one["grantId"] = json!("instance-1");
    let mut off = event("deactivation", "late-2", "late", -30, None);
    off["grantId"] = json!("instance-1");
    f.app.post_events(&json!([one, off])).await;

    // Act: a second grant of the same pair, started before that deactivation, arrives late.
    let mut two = event("activation", "late-3", "late", -60, Some(3600));
    two["grantId"] = json!("instance-2");
    f.app.post_events(&two).await;
    run_cycle(&f.app, "alpha").await;

    // Assert: the deactivation named instance-1 only; instance-2 still runs.
    assert!(is_member(&f.a, "late"));
    let ended: Option<time::OffsetDateTime> = f
        .app
        .db
        .query_one(
            "SELECT ended_at FROM grants WHERE grant_key = 'instance-2'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ended, None);
}

#[tokio::test]
async fn a_deactivation_is_not_counted_as_drift_but_a_member_removed_by_hand_is() {
    // Arrange: twelve members pimbridge added (the cycle checks them with a listing); eleven
    // deactivate, and the twelfth, whose grant runs on, is removed by hand in AWS.
    let f = spawn_with_cycles(|app| app.activation_limit = 20).await;
    f.app.post_events(&activations("norm", GROUP_A, 12)).await;
    wait_for_no_pending(&f.app, Duration::from_secs(10)).await;
    assert_eq!(members(&f.a), 12);
    let off: Vec<Value> = (0..11)
        .map(|i| deactivation(&format!("norm-off-{i}"), GROUP_A, &format!("norm-user-{i}")))
        .collect();
    f.app.post_events(&json!(off)).await;
    remove_in_aws(&f.a, "norm-user-11").await;

    // Act
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert: the eleven removals are the grants ending, as pimbridge's record expected; only
    // the membership someone removed behind its back is drift (and it is put back).
    assert_eq!(cycle.applied, 12);
    assert_eq!(members(&f.a), 1);
    let metrics = f.app.metrics().await;
    let drift = |kind| {
        metric_value(
            &metrics,
            "pimbridge_drift_total",
            &[("application", "alpha"), ("kind", kind)],
        )
    };
    assert_eq!(drift("missing"), 1.0);
    assert_eq!(drift("lingering"), 0.0);
}

/// `n` members pimbridge added to group A (`{prefix}-user-{i}`), all deactivated since, with the
/// emulator's request log cleared.
async fn owned_members_deactivated(f: &Fixture, prefix: &str, n: usize) {
    let Value::Array(on) = activations(prefix, GROUP_A, n) else {
        unreachable!("activations are an array")
    };
    let off: Vec<Value> = (0..n)
        .map(|i| {
            deactivation(
                &format!("{prefix}-off-{i}"),
                GROUP_A,
                &format!("{prefix}-user-{i}"),
            )
        })
        .collect();
    // A request carries at most 1,000 events.
    for chunk in on.chunks(500) {
        f.app.post_events(&json!(chunk)).await;
    }
    run_cycle(&f.app, "alpha").await;
    wait_for_no_pending(&f.app, Duration::from_secs(10)).await;
    assert_eq!(members(&f.a), n);
    for chunk in off.chunks(500) {
        f.app.post_events(&json!(chunk)).await;
    }
    f.a.clear_request_log();
}

/// 1,050 members pimbridge owns (more than one reconciliation of 1,000 pairs), all deactivated,
/// with a removal threshold above them.
async fn wide_group_deactivated(prefix: &str) -> Fixture {
    let f = spawn_with_cycles(|app| {
        app.activation_limit = 1;
        app.max_removals_per_cycle = 2000;
    })
    .await;
    owned_members_deactivated(&f, prefix, 1050).await;
    f
}

/// GETs of the emulator's group-member listing (one per page of 100).
fn listing_pages(emulator: &RunningEmulator) -> usize {
    emulator
        .request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.query.contains("groups.value"))
        .count()
}

#[tokio::test]
async fn a_cycle_of_deactivations_removes_without_listing_the_group_first() {
    // Arrange: 1,050 members pimbridge owns, all deactivated; a removal threshold above them.
    let f = wide_group_deactivated("gone").await;

    // Act
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert: all removed by eleven PATCHes, and the group was not listed: a removal is sent
    // whatever AWS holds, so the drift check had nothing to learn (it listed 11 pages before).
    assert_eq!(cycle.applied, 1050);
    assert_eq!(members(&f.a), 0);
    assert_eq!(listing_pages(&f.a), 0, "listing pages");
    let patches =
        f.a.request_log()
            .iter()
            .filter(|r| r.method == "PATCH")
            .count();
    assert_eq!(patches, 11);
}

#[tokio::test]
async fn a_cycle_of_several_reconciliations_lists_a_group_once() {
    // Arrange: 1,050 members pimbridge owns and removed (more than one reconciliation of 1,000
    // pairs), then activated again: the drift check looks in AWS for every one of them.
    let f = wide_group_deactivated("wide").await;
    run_cycle(&f.app, "alpha").await;
    assert_eq!(members(&f.a), 0);
    let again: Vec<Value> = (0..1050)
        .map(|i| {
            let mut on = activation(
                &format!("wide-again-{i}"),
                GROUP_A,
                &format!("wide-user-{i}"),
            );
            // After the deactivations (an activation is dated a minute back).
            on["occurredAt"] = json!(at(0));
            on
        })
        .collect();
    for chunk in again.chunks(500) {
        f.app.post_events(&json!(chunk)).await;
    }
    // On a slow machine the admission window may have room again for one immediate add.
    wait_for_no_pending(&f.app, Duration::from_secs(10)).await;
    f.a.clear_request_log();

    // Act
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert: all added back (at least 1,049 by the cycle: two reconciliations), and the group
    // was listed once (one page: it was empty), not once per reconciliation.
    assert!(cycle.applied >= 1049, "applied {}", cycle.applied);
    assert_eq!(members(&f.a), 1050);
    assert_eq!(listing_pages(&f.a), 1, "listing pages");
}

#[tokio::test]
async fn a_refused_patch_costs_only_its_own_hundred_members_sent_again_one_by_one() {
    // Arrange: 150 owned members deactivated (one reconciliation, two PATCHes); AWS refuses the
    // first PATCH once.
    let f = spawn_with_cycles(|app| app.activation_limit = 1).await;
    owned_members_deactivated(&f, "split", 150).await;
    f.a.inject(Fault::error(400, 1).for_methods(&["PATCH"]));

    // Act
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert: all removed; the refused PATCH's hundred members were sent again one at a time (to
    // find which one AWS refuses), the other fifty in their own PATCH.
    assert_eq!(cycle.applied, 150);
    assert_eq!(members(&f.a), 0);
    let patches: Vec<u16> =
        f.a.request_log()
            .iter()
            .filter(|r| r.method == "PATCH")
            .map(|r| r.status)
            .collect();
    assert_eq!(patches.len(), 102, "one refused, 100 alone, one of 50");
    assert_eq!(patches[0], 400);
}

#[tokio::test]
async fn one_reconciliation_of_mixed_changes_records_each_pair_its_own_outcome() {
    // Arrange: in one group, a standing member that also activated, and two members pimbridge
    // added; one of those is then removed by hand in AWS.
    let f = spawn_with_cycles(|app| app.activation_limit = 3).await;
    standing_member_in_aws(&f.a, "perm").await;
    for principal in ["perm", "drop", "fix"] {
        f.app
            .post_events(&event(
                "activation",
                &format!("{principal}-on"),
                principal,
                -60,
                Some(3600),
            ))
            .await;
    }
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    remove_in_aws(&f.a, "fix").await;

    // Act: a deferred activation of a user new to AWS, two deactivations, then one cycle, whose
    // reconciliation takes the four pairs together.
    f.app
        .post_events(&json!([
            event("activation", "add-on", "add", -30, Some(3600)),
            event("deactivation", "drop-off", "drop", -10, None),
            event("deactivation", "perm-off", "perm", -10, None),
        ]))
        .await;
    run_cycle(&f.app, "alpha").await;

    // Assert: AWS, the record of AWS, the log and the jobs each name the right pair.
    let in_aws: Vec<bool> = ["add", "drop", "fix", "perm"]
        .iter()
        .map(|p| is_member(&f.a, p))
        .collect();
    assert_eq!(in_aws, [true, false, true, true]);
    let rows = f
        .app
        .db
        .query(
            "SELECT m.principal_id, m.aws_state, m.provenance,
                    l.action, l.status, coalesce(l.reason, ''), e.source_event_id, j.state
             FROM aws_memberships m
             JOIN provisioning_log l ON l.principal_id = m.principal_id
                  AND l.cycle_id = (SELECT max(id) FROM cycles) AND l.action IN ('add', 'remove')
             LEFT JOIN events e ON e.id = l.event_id
             LEFT JOIN jobs j ON j.id = l.job_id
             ORDER BY m.principal_id",
            &[],
        )
        .await
        .unwrap();
    let seen: Vec<String> = rows
        .iter()
        .map(|r| {
            let reason: String = r.get(5);
            format!(
                "{} {} {} | {} {} {} | {} {}",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, Option<String>>(2).unwrap_or_default(),
                r.get::<_, String>(3),
                r.get::<_, String>(4),
                if reason.contains("standing") {
                    "standing"
                } else {
                    &reason
                },
                r.get::<_, Option<String>>(6).unwrap_or_else(|| "-".into()),
                r.get::<_, Option<String>>(7).unwrap_or_else(|| "-".into()),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            "add present owned | add succeeded  | add-on done",
            "drop absent owned | remove succeeded deactivated | drop-off done",
            // Drift repaired: no event asked for it.
            "fix present owned | add succeeded  | - -",
            "perm present standing | remove skipped standing | perm-off done",
        ],
        "{seen:#?}"
    );
}
