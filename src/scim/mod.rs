//! AWS IAM Identity Center SCIM client (in progress).
