-- AWS ids of Entra users and groups, per application, so that the hot path is one PATCH.
-- A 404 on a cached id drops the entry and the object is resolved again.
CREATE TABLE scim_ids (
    application text NOT NULL REFERENCES applications (name),
    -- 'user' or 'group'
    kind        text NOT NULL CHECK (kind IN ('user', 'group')),
    -- Entra object id
    entra_id    text NOT NULL,
    -- AWS IAM Identity Center resource id
    aws_id      text NOT NULL,
    resolved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (application, kind, entra_id)
);
