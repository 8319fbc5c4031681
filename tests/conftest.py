"""Shared pytest set-up: the `slow` marker (end-to-end tests over a minute; `-m "not slow"`
skips them)."""


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end tests that take over a minute")
