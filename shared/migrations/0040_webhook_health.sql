-- Webhook health (shared/webhook_health.py): what the last check of an account's amoCRM
-- subscription found, and the last time we had to re-subscribe it. One row per account; the
-- reconcile planner reads it (shared/sync_runs.py) and the status page shows it.
CREATE TABLE webhook_health (
    account_id BIGINT NOT NULL PRIMARY KEY,
    -- The last check (answered or not) and what it found: enabled | missing | disabled |
    -- changed (our URL subscribed to other events) | error (amoCRM did not answer; see `error`).
    checked_at DATETIME(6) NOT NULL,
    found VARCHAR(16) NOT NULL,
    error VARCHAR(500) NULL,
    -- The last check that saw our subscription present and enabled.
    confirmed_at DATETIME(6) NULL,
    -- The last re-subscription: when, why (what was found), how many so far, and the
    -- incremental reconcile queued for the gap.
    resubscribed_at DATETIME(6) NULL,
    resubscribe_reason VARCHAR(255) NULL,
    resubscribes INT NOT NULL DEFAULT 0,
    gap_run_id BIGINT NULL,
    CONSTRAINT fk_webhook_health_account FOREIGN KEY (account_id) REFERENCES accounts (id)
        ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
