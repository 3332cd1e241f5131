"""Fault injection: bad input, interrupted writes, killed processes, lost services."""
