"""Pictures and files: loading and fitting images, writing videos and frames atomically with their metadata.

May import: nothing of svdcli but runtime."""
