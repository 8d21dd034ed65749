//! Microsoft Graph client for the Entra side.
//!
//! Graph sends no notifications for PIM resources (docs/webhooks.md): a group-membership change
//! notification is only a hint. pimbridge resolves it here, as an app with client
//! credentials (docs/webhooks.md): the group's active PIM-for-Groups assignment instances
//! (`assignmentType == "activated"` are activations, with their `endDateTime`), the user's
//! attributes, the group's name. It also creates, renews and deletes the subscriptions that
//! bring the hints.
//!
//! - [`types`]: wire types shared with the Graph emulator, lenient timestamps;
//! - [`error`]: [`GraphError`], sorted by what the caller should do;
//! - [`token`]: the client-credentials token, cached and refreshed one at a time;
//! - [`credential`]: a certificate's signed client assertion, or a federated token;
//! - [`client`]: the operations, with retries on [`crate::outbound::RetryPolicy`];
//! - [`users`]: a user's attributes as AWS needs them, for sources that name too few.

pub mod client;
pub mod credential;
pub mod error;
pub mod token;
pub mod types;
pub mod users;

pub use client::{
    odata_string, GraphClient, GraphClientSettings, DEFAULT_AUTHORITY_URL, DEFAULT_GRAPH_URL,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_REQUEST_TIMEOUT,
};
pub use credential::{ClientAssertion, CredentialError};
pub use error::{GraphError, GraphErrorResponse, TokenFailure};
pub use types::{
    format_graph_time, parse_graph_time, AssignmentInstance, GraphGroup, GraphUser,
    NewSubscription, Subscription, ACCESS_MEMBER, ASSIGNMENT_ACTIVATED, ASSIGNMENT_ASSIGNED,
};
