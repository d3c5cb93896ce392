"""Real servers and fault injection for tests, benchmarks and the demo (not
imported by glancefs itself). Shipped in the wheel as a supported API for
testing tools against a real Glance: glance_server, v1server, keystone_server,
faultproxy and linkproxy (README.rst, Installing). Not APIs: memory_service
(the fast tier's in-memory fake) and stress (the suite's GLANCEFS_STRESS mode)."""
