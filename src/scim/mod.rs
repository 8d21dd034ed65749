//! SCIM 2.0 client for AWS IAM Identity Center.
//!
//! pimbridge pushes Entra PIM group activations to AWS over SCIM. AWS's endpoint is
//! strict (required attributes, refused characters, single-valued lists), throttles
//! without publishing limits, is eventually consistent, and truncates listings unless
//! paged by cursor (see docs/emulator.md). This module hides all of that behind
//! [`ScimClient`], one per AWS application:
//!
//! - [`types`]: RFC 7643/7644 wire types with AWS quirks (lenient error envelope);
//! - [`error`]: [`ScimError`], sorted by what the caller should do;
//! - [`pacing`]: the per-client rate limiter (retries and transport are [`crate::outbound`]'s);
//! - [`mapping`]: Entra user → SCIM user, and the checks run before any request;
//! - [`client`]: the operations.

pub mod client;
pub mod error;
pub mod mapping;
pub mod pacing;
pub mod types;

pub use client::{RequestObserver, ScimClient, ScimClientSettings, MAX_MEMBER_CHANGES_PER_PATCH};
pub use error::{ErrorResponse, ScimError};
pub use mapping::{map_user, CharacterPolicy, MappingError, SourceUser};
pub use types::{ScimGroup, ScimUser};
