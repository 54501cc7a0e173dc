"""Merge math and safetensors shard streaming; knows nothing of SQL."""
