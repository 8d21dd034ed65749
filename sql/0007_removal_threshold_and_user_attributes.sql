-- Deletion threshold (docs/correctness.md): a cycle that would remove more memberships of an
-- application than its `max_removals_per_cycle` removes none of them and is `held` until an
-- operator confirms through the admin API.
ALTER TABLE cycles DROP CONSTRAINT cycles_outcome_check;
ALTER TABLE cycles ADD CONSTRAINT cycles_outcome_check
    CHECK (outcome IN ('running', 'succeeded', 'partial', 'failed', 'interrupted', 'held'));
-- How many removals were due when the cycle started (what a held cycle held back).
ALTER TABLE cycles ADD COLUMN removals_due integer NOT NULL DEFAULT 0;
-- Removals an operator confirmed for the application's next cycle, above its threshold; used once.
ALTER TABLE applications ADD COLUMN removals_confirmed integer;

-- What pimbridge last knew AWS holds for a user (userName, names, e-mail), so that a changed
-- attribute in a later event is sent to AWS once, and an unchanged one costs nothing.
ALTER TABLE scim_ids ADD COLUMN attributes jsonb;
