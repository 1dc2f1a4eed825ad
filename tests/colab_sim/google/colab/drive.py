"""Simulated Google Drive: ``mount`` links the mountpoint to the shared folder ``$COLAB_SIM_DRIVE``.

The folder holds ``MyDrive/`` and is the only thing the simulated runtimes share, as Drive is on Colab.
Checks and messages follow ``google.colab.drive.mount``.
"""

import os


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    """Mount the simulated Drive at ``mountpoint``."""
    del timeout_ms, readonly
    if " " in mountpoint:
        raise ValueError("Mountpoint must not contain a space.")
    mountpoint = os.path.expanduser(mountpoint)
    source = os.environ.get("COLAB_SIM_DRIVE", "")
    if not source or not os.path.isdir(source):
        raise ValueError("mount failed")
    if os.path.islink(mountpoint) and os.path.realpath(mountpoint) == os.path.realpath(source):
        if not force_remount:
            print(f"Drive already mounted at {mountpoint}; to attempt to forcibly remount, "
                  f'call drive.mount("{mountpoint}", force_remount=True).')
            return
        os.unlink(mountpoint)
    if os.path.isfile(mountpoint):
        raise ValueError("Mountpoint must either be a directory or not exist")
    if os.path.isdir(mountpoint) and not os.path.islink(mountpoint):
        if os.listdir(mountpoint):
            raise ValueError("Mountpoint must not already contain files")
        os.rmdir(mountpoint)
    os.makedirs(os.path.dirname(os.path.abspath(mountpoint)), exist_ok=True)
    os.symlink(source, mountpoint)
    print(f"Mounted at {mountpoint}")


def flush_and_unmount(timeout_ms=24 * 60 * 60 * 1000):
    """Unmount (the simulated Drive keeps every file, as Drive does)."""
    del timeout_ms
