-- A deletion we had to date ourselves (a delete webhook carries no time, a reconcile guesses):
-- a contact seen alive in a later amoCRM read overrides it whatever the timestamps say.
-- received_at: when we learned the stored state (job received_at / amoCRM read time), the
-- tie-break between two states with the same amoCRM updated_at.
ALTER TABLE contacts
    ADD COLUMN deleted_synthetic TINYINT(1) NOT NULL DEFAULT 0 AFTER is_deleted,
    ADD COLUMN received_at DOUBLE NOT NULL DEFAULT 0 AFTER amo_updated_at;
