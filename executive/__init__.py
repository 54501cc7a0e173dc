"""The Executive-Memory question protocol; knows nothing of SQL."""
