//! AWS IAM Identity Center SCIM emulator (in progress).
