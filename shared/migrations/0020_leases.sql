-- Leases: a named role (the scheduler) held by one process until expires_at, renewed while it
-- lives. Times are the server's clock only, so replicas with skewed clocks still agree.
-- generation grows on every change of holder (a fencing token for logs and metrics).
CREATE TABLE leases (
    name VARCHAR(191) NOT NULL PRIMARY KEY,
    holder VARCHAR(191) NOT NULL,
    generation BIGINT UNSIGNED NOT NULL DEFAULT 1,
    acquired_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    expires_at DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
