"""Running mcpq outside production: `make run` (devserver) and embedded servers for a fresh machine.

Not part of the installed packages: nothing here ships in the runtime image.
"""
