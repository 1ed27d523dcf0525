-- amosync schema, first version. Every row that belongs to an account is keyed by accounts.id,
-- which is the amoCRM account id (the same id webhooks, widget JWTs and the disable hook carry).

CREATE TABLE accounts (
    id BIGINT NOT NULL PRIMARY KEY,
    name VARCHAR(190) NOT NULL,
    host VARCHAR(255) NOT NULL,
    amo_name VARCHAR(255) NOT NULL DEFAULT '',
    status VARCHAR(32) NOT NULL DEFAULT 'active',
    status_reason VARCHAR(500) NULL,
    webhook_secret_enc VARBINARY(512) NULL,
    email_types VARCHAR(100) NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY uq_accounts_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE oauth_tokens (
    account_id BIGINT NOT NULL PRIMARY KEY,
    access_token_enc VARBINARY(8192) NOT NULL,
    refresh_token_enc VARBINARY(8192) NOT NULL,
    expires_at DATETIME(6) NOT NULL,
    refreshed_at DATETIME(6) NULL,
    generation INT NOT NULL DEFAULT 1,
    CONSTRAINT fk_tokens_account FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE,
    KEY ix_tokens_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE oauth_states (
    state_hash CHAR(64) NOT NULL PRIMARY KEY,
    name VARCHAR(190) NOT NULL,
    rebind_allowed TINYINT(1) NOT NULL DEFAULT 0,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    expires_at DATETIME(6) NOT NULL,
    used_at DATETIME(6) NULL,
    KEY ix_states_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE unisender_settings (
    account_id BIGINT NOT NULL PRIMARY KEY,
    api_key_enc VARBINARY(1024) NOT NULL,
    list_id BIGINT NULL,
    list_title VARCHAR(255) NULL,
    connected_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    CONSTRAINT fk_unisender_account FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE widget_token_uses (
    jti VARCHAR(128) NOT NULL PRIMARY KEY,
    account_id BIGINT NOT NULL,
    expires_at DATETIME(6) NOT NULL,
    KEY ix_jti_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- What amoCRM last told us about a contact (webhook or API read).
CREATE TABLE contacts (
    account_id BIGINT NOT NULL,
    contact_id BIGINT NOT NULL,
    name VARCHAR(255) NOT NULL DEFAULT '',
    amo_updated_at BIGINT NOT NULL DEFAULT 0,
    is_deleted TINYINT(1) NOT NULL DEFAULT 0,
    seen_in_run BIGINT NULL,
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    PRIMARY KEY (account_id, contact_id),
    CONSTRAINT fk_contacts_account FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE contact_emails (
    account_id BIGINT NOT NULL,
    contact_id BIGINT NOT NULL,
    email VARCHAR(254) NOT NULL,
    PRIMARY KEY (account_id, contact_id, email),
    KEY ix_contact_emails_email (account_id, email),
    CONSTRAINT fk_contact_emails_contact FOREIGN KEY (account_id, contact_id)
        REFERENCES contacts (account_id, contact_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- What we last did in the account's Unisender list for one address.
CREATE TABLE list_members (
    account_id BIGINT NOT NULL,
    email VARCHAR(254) NOT NULL,
    state VARCHAR(16) NOT NULL,
    name_sent VARCHAR(255) NULL,
    error_code VARCHAR(100) NULL,
    error_message VARCHAR(1000) NULL,
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    PRIMARY KEY (account_id, email),
    KEY ix_list_members_state (account_id, state),
    CONSTRAINT fk_list_members_account FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- amoCRM custom-field enum ids are per account; webhooks carry only the id.
CREATE TABLE amo_field_enums (
    account_id BIGINT NOT NULL,
    enum_id BIGINT NOT NULL,
    field_code VARCHAR(32) NOT NULL,
    enum_code VARCHAR(32) NOT NULL,
    fetched_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (account_id, enum_id),
    CONSTRAINT fk_enums_account FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE sync_runs (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    kind VARCHAR(32) NOT NULL,
    status VARCHAR(16) NOT NULL DEFAULT 'queued',
    requested_by VARCHAR(64) NULL,
    pages_read INT NOT NULL DEFAULT 0,
    contacts_seen INT NOT NULL DEFAULT 0,
    rows_imported INT NOT NULL DEFAULT 0,
    emails_excluded INT NOT NULL DEFAULT 0,
    row_errors INT NOT NULL DEFAULT 0,
    import_calls INT NOT NULL DEFAULT 0,
    checkpoint_page INT NULL,
    watermark BIGINT NULL,
    error VARCHAR(1000) NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    started_at DATETIME(6) NULL,
    finished_at DATETIME(6) NULL,
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    KEY ix_sync_runs_account (account_id, status),
    KEY ix_sync_runs_created (created_at),
    CONSTRAINT fk_sync_runs_account FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Per-account spacing of amoCRM requests, shared by every process (see shared/ratelimit.py).
CREATE TABLE amo_rate_slots (
    account_key VARCHAR(64) NOT NULL PRIMARY KEY,
    next_slot DOUBLE NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The original's add-worker / delete-worker / clear-workers, with heartbeats.
CREATE TABLE workers (
    type VARCHAR(64) NOT NULL,
    name VARCHAR(128) NOT NULL,
    host VARCHAR(255) NULL,
    pid INT NULL,
    started_at DATETIME(6) NULL,
    last_heartbeat_at DATETIME(6) NULL,
    jobs_done BIGINT NOT NULL DEFAULT 0,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (type, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE worker_limits (
    type VARCHAR(64) NOT NULL PRIMARY KEY,
    max_workers INT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per scheduled run: replicas race to insert it, the winner runs the job.
CREATE TABLE scheduler_runs (
    job_name VARCHAR(64) NOT NULL,
    run_key VARCHAR(64) NOT NULL,
    host VARCHAR(255) NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (job_name, run_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Contact events applied per account and minute, for the status page chart.
CREATE TABLE event_minutes (
    account_id BIGINT NOT NULL,
    minute DATETIME NOT NULL,
    events INT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, minute)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Why a job was buried (beanstalkd keeps the job, not the reason); cleared when it is kicked.
CREATE TABLE parked_jobs (
    tube VARCHAR(128) NOT NULL,
    job_id BIGINT NOT NULL,
    account_id BIGINT NULL,
    reason VARCHAR(2000) NOT NULL,
    body MEDIUMTEXT NULL,
    buried_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (tube, job_id),
    KEY ix_parked_buried (buried_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
