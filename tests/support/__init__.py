"""Helpers of the tests and benches: readers, fixtures' plumbing, checks."""
