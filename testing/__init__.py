"""Helpers the tests and the benchmarks share: drive a local stack as a person would.

`accounts` installs amoCRM sandbox accounts through the gateway, `widget` connects Unisender keys
through the widget backend, `sync` runs full syncs and waits for them, `caches` forgets
settings-derived singletons. The stack itself lives in `devstack`, the HTTP steps against the
emulators in `devstack.flows`. Nothing here imports from `tests/`.
"""
