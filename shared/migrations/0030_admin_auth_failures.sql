-- Failed admin credentials per client IP, in fixed windows: every function process (and every
-- container) counts into the same row, so the limit holds however many processes answer.
CREATE TABLE admin_auth_failures (
    client_ip VARCHAR(64) NOT NULL PRIMARY KEY,
    window_started_at DATETIME(6) NOT NULL,
    failures INT UNSIGNED NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
