"""Waiting for pyiceberg's writer threads, which it offers no public way to do.

Upstream (pyiceberg 0.12): ``pyiceberg.utils.concurrent.ExecutorFactory.get_or_create()``
returns one process-wide ``ThreadPoolExecutor``, kept in the private class attribute
``ExecutorFactory._instance``, that writes data files for every append and overwrite.
Nothing public shuts it down or waits for it.

Why we need it: a run interrupted by Ctrl-C or SIGTERM stops its main thread, but
the executor's threads go on writing data files into the warehouse; a run that
removes what it wrote must wait for them first, or a directory removed under them
is created again by the next file. This module only reads and resets the private
attribute (nothing of pyiceberg is replaced, so it is not one of ``CHANGES``).

When upstream offers a public shutdown: ``test_upstream_offers_no_public_executor_shutdown``
fails; call that instead and delete this module.
"""

from __future__ import annotations

from pyiceberg.utils.concurrent import ExecutorFactory


def stop_writers() -> None:
    """Wait for the shared executor's running writes, cancel queued ones, and drop it.

    A later write in this process (tests call ``main`` repeatedly) gets a fresh executor.
    """
    executor = ExecutorFactory._instance
    if executor is not None:
        executor.shutdown(wait=True, cancel_futures=True)
        ExecutorFactory._instance = None
