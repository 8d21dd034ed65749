//! pimbridge: Microsoft Entra PIM-for-Groups activations to AWS IAM Identity Center, in milliseconds.
#![forbid(unsafe_code)]

pub mod emulator;
pub mod scim;
pub mod secret;
