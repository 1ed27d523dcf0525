-- amoCRM 403 blocks (shared/blocks.py): a hold on our egress IP ('egress:<EGRESS_ID>') or on one
-- account ('account:<id>'), shared by every process. While a row exists nothing is sent through
-- it but one probe at `next_probe_at`; the probe's success deletes the row and traffic resumes.
CREATE TABLE amo_holds (
    hold_key VARCHAR(80) NOT NULL PRIMARY KEY,
    account_id BIGINT NULL,
    reason VARCHAR(500) NOT NULL,
    request_id VARCHAR(64) NULL,
    started_at DATETIME(6) NOT NULL,
    next_probe_at DATETIME(6) NOT NULL,
    probe_interval_seconds INT NOT NULL,
    probes INT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A 403 is no longer an account status: accounts an earlier version marked `blocked` sync again
-- (if amoCRM still refuses them, they get a hold that heals by itself).
UPDATE accounts SET status = 'active', status_reason = NULL WHERE status = 'blocked';
