-- The Graph subscriptions pimbridge creates and renews, one per Entra group assigned to an
-- application (when graph.notification_url is configured).

CREATE TABLE graph_subscriptions (
    group_id        text PRIMARY KEY,
    subscription_id text NOT NULL UNIQUE,
    resource        text NOT NULL,
    expires_at      timestamptz NOT NULL,
    -- set when Graph asks for reauthorization (a lifecycle notification): renew at once
    renew_requested boolean NOT NULL DEFAULT false,
    renewed_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error      text
);
