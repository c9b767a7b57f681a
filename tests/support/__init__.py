"""Helpers shared by the test suites (client tests and integration tests)."""
