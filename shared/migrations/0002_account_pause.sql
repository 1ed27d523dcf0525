-- Scheduled reconciles of an account are paused until this time (UTC), e.g. after amoCRM answered
-- 402 (account unpaid): the status stays as it is because paying restores access by itself,
-- but each reconcile would otherwise make one failing request forever. A manual sync still runs.
ALTER TABLE accounts
    ADD COLUMN paused_until DATETIME(6) NULL AFTER status_reason,
    ADD COLUMN paused_reason VARCHAR(255) NULL AFTER paused_until;
