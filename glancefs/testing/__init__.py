"""Real servers and fault injection for tests, benchmarks and the demo (not imported by
glancefs itself)."""
