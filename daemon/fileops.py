"""File operations that every part shares: reading and hashing a file, temporary and aside names,
and the single-file move with its recovery.

Why one module: the loader, the pipeline, the mover and undo all touch the same files, and each
guarantee (a file is read in bounded memory, hashed once, never overwritten, never left half-copied
under its real name) must hold the same way wherever a file is read or placed.
"""

from __future__ import annotations

# --- reading and hashing ------------------------------------------------------------------------


# --- temporary names and the single-file move -----------------------------------------------------
