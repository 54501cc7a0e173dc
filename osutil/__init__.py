"""Process and file utilities below everything else: directories written whole or not at all,
private per-user runtime directories and the lock files in them, process identity, and the
process-level settings (threads, allocator) of long merges and trainings.

It imports nothing of memo's other packages (and not torch), so any of them can use it.
"""
