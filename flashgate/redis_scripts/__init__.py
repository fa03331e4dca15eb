"""flashgate's Redis Lua scripts, one file per atomic operation, and their loader."""
