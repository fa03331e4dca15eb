"""flashgate's shared package: what the gateway and the order consumer both use.

The order schema, the settings object, Kafka and Redis helpers, the local stack
and the `flashgate` command live here; neither service imports the other.
"""

__version__ = "0.1.0"
