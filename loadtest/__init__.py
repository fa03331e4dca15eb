"""Load runs and benchmarks: Locust scenarios, burst generators, B1-B5, the report."""
