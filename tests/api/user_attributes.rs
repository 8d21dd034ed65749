//! A changed userName, name or e-mail reaches AWS (docs/correctness.md): the user is updated
//! with the membership change, once, and the step is in the provisioning log.

use std::time::Duration;

use aws_scim_emulator::RunningEmulator;
use serde_json::{json, Value};

use crate::fixture::*;
use crate::helpers::*;

/// An activation of `principal` whose user is now called `user_name` / `display`.
fn renamed(id: &str, principal: &str, user_name: &str, display: &str) -> Value {
    let mut event = activation(id, GROUP_A, principal);
    event["user"] = json!({"userName": user_name, "givenName": "Alice", "familyName": "Liddell",
                           "displayName": display, "email": user_name});
    event
}

/// The AWS user whose externalId is the Entra object id `principal`.
fn aws_user(emulator: &RunningEmulator, principal: &str) -> Value {
    emulator
        .state()
        .users
        .into_iter()
        .find(|u| u["externalId"] == principal)
        .expect("the user is in AWS")
}

fn user_patches(emulator: &RunningEmulator) -> usize {
    emulator
        .request_log()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/Users/"))
        .count()
}

#[tokio::test]
async fn a_renamed_user_is_updated_in_aws_once_with_the_next_activation() {
    let f = spawn_with_emulators(|_| {}).await;
    f.app
        .post_events(&activation("ren-1", GROUP_A, "ren"))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(10)).await;
    assert_eq!(aws_user(&f.a, "ren")["userName"], "ren@contoso.com");

    // Act: the user is renamed in Entra and activates again; then once more, unchanged.
    let new_name = "alice.pleasance@contoso.com";
    let new_display = "Alice Pleasance Liddell";
    f.app
        .post_events(&renamed("ren-2", "ren", new_name, new_display))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(10)).await;
    f.app
        .post_events(&renamed("ren-3", "ren", new_name, new_display))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(10)).await;

    // Assert: AWS holds the new attributes, the user kept its id and its membership, and only
    // one update was sent.
    let user = aws_user(&f.a, "ren");
    assert_eq!(user["userName"], new_name);
    assert_eq!(user["displayName"], new_display);
    assert_eq!(user["emails"][0]["value"], new_name);
    assert_eq!(f.a.state().users.len(), 1, "updated, not created again");
    assert_eq!(members(&f.a), 1);
    assert_eq!(user_patches(&f.a), 1);
    let (status, reason): (String, String) = {
        let row = f
            .app
            .db
            .query_one(
                "SELECT status, reason FROM provisioning_log WHERE action = 'update_user'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(status, "succeeded");
    assert!(
        reason.contains("userName") && reason.contains("displayName"),
        "{reason}"
    );
    let created = f
        .app
        .count("SELECT count(*) FROM provisioning_log WHERE action = 'create_user'")
        .await;
    assert_eq!(created, 1, "the creation is logged too");
}

#[tokio::test]
async fn a_deferred_activation_of_a_member_still_brings_its_new_attributes() {
    // Arrange: one immediate slot; the user is added at once.
    let f = spawn_with_cycles(|app| app.activation_limit = 1).await;
    f.app
        .post_events(&activation("late-1", GROUP_A, "late"))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(10)).await;

    // Act: a renamed activation waits for the cycle, while AWS already holds the membership.
    f.app
        .post_events(&renamed(
            "late-2",
            "late",
            "late.new@contoso.com",
            "Alice New",
        ))
        .await;
    run_cycle(&f.app, "alpha").await;

    // Assert
    let user = aws_user(&f.a, "late");
    assert_eq!(user["userName"], "late.new@contoso.com");
    assert_eq!(user["displayName"], "Alice New");
    assert_eq!(members(&f.a), 1);
}

#[tokio::test]
async fn a_refused_update_does_not_hold_back_the_membership() {
    // Arrange: another user in AWS already has the name ours is renamed to.
    let f = spawn_with_emulators(|_| {}).await;
    f.app
        .post_events(&activation("taken-1", GROUP_A, "first"))
        .await;
    f.app
        .post_events(&activation("taken-2", GROUP_A, "second"))
        .await;
    wait_for_no_pending(&f.app, Duration::from_secs(10)).await;
    f.app
        .post_events(&deactivation("taken-3", GROUP_A, "second"))
        .await;

    // Act: "second" is renamed onto "first"'s userName and activates again (after the
    // deactivation, which ends every grant that started before it).
    let mut again = renamed("taken-4", "second", "first@contoso.com", "Second Renamed");
    again["occurredAt"] = json!(at(1));
    f.app.post_events(&again).await;
    wait_for_no_pending(&f.app, Duration::from_secs(10)).await;

    // Assert: AWS refused the rename (409); the membership went ahead; the log says why.
    assert_eq!(aws_user(&f.a, "second")["userName"], "second@contoso.com");
    assert_eq!(members(&f.a), 2);
    let row = f
        .app
        .db
        .query_one(
            "SELECT status, error_code FROM provisioning_log WHERE action = 'update_user'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("scim_409"));
}
