"""The local stack: Kafka from Maven Central jars, Debian's Redis, and flashgate's processes.

Used by `flashgate up` and by the test fixtures, so the tests start exactly
what a user starts.
"""
