"""The fold-parallel pool's workers leave interrupts to their parent.

Jupyter shuts a kernel down by first sending SIGINT to the kernel's whole
process group, which holds the pool's idle workers too (kept for the next
training call): each worker used to die printing a KeyboardInterrupt
traceback, two per papermill run of a fold-parallel point.
"""
import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import os, signal, time
    from qmlnb.qcnn import parallel

    got = []
    signal.signal(signal.SIGINT, lambda *_: got.append(1))  # the kernel: survives the interrupt (not inherited)
    pool = parallel.fold_pool(2, 1)
    assert list(pool.map(time.sleep, [0.5, 0.5])) == [None, None]  # both workers started
    os.killpg(os.getpgrp(), signal.SIGINT)  # what jupyter_client's shutdown_kernel does first
    time.sleep(2)
    assert got, "the parent did not see the interrupt"
    assert list(pool.map(abs, [-1, -2])) == [1, 2], "the workers did not survive the interrupt"
    parallel.shutdown_pools()
    print("done", flush=True)
""")


@pytest.mark.timeout(180)
def test_an_interrupt_of_the_process_group_leaves_the_fold_workers_quiet_and_alive():
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=170,
                          start_new_session=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    assert "KeyboardInterrupt" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
