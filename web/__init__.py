"""nordlys web: a small review app for a headless home server (`nordlys web`, extra `[web]`).

It sits beside the daemon and uses its parts (config, journal, mover, loader, undo); the daemon
never imports it.
"""
