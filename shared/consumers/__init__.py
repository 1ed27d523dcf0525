"""Queue-triggered consumers: one module per tube (contact_events, full_sync, token_refresh)."""
