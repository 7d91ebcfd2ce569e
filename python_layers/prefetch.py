"""Making the data layer's batches ahead of time: in a thread, or in worker processes.

``ThreadPrefetcher`` runs ``source.next_batch`` in a daemon thread. Under the ``caffe``
binary the main thread holds Python's GIL while it runs C++ layers, so the thread works only
in the gaps (while Python layers run or ``get`` waits): beside the template loss it keeps
about 130 images/s on 2 cores (benchmarks/bench_data_layer.py).

``ProcessPrefetcher`` makes them in ``workers`` processes of their own (started with
``spawn``: a fork of Caffe's threaded process could inherit a held lock), which no GIL of
the trainer holds back. Worker w makes batches start + w, start + w + workers, ...; each
writes a batch into one of its shared-memory slots and the layer reads them back in order,
so the batches are those of one source, bit for bit (batch k is a pure function of (seed,
k): ``seg_data.BatchSource``). The slots' names are unlinked once every worker has mapped
them, so nothing is left in /dev/shm however the trainer ends, and a worker dies with the
process that started it (``PR_SET_PDEATHSIG``). Both prefetchers re-raise an error of the
batch maker in ``get``, message intact.
"""
import math
import queue
import threading
import time

import numpy as np

from python_layers import ToolkitError, die_with_parent

WAIT_SECONDS = 1.0   # how often a waiting ``get`` checks that its thread or worker lives


class ThreadPrefetcher:
    """``source.next_batch`` in a daemon thread, ``depth`` batches ahead."""

    def __init__(self, source, depth):
        self.source = source
        self.queue = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, name="ImageSegData-prefetch",
                                       daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.stopping.is_set():
                self.queue.put(("batch", self.source.next_batch()))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self.queue.put(("error", exc))

    def get(self):
        """(data, label) of the next batch."""
        if self.error is not None:
            raise self.error
        while True:
            try:
                kind, payload = self.queue.get(timeout=WAIT_SECONDS)
                break
            except queue.Empty:
                if not self.thread.is_alive():
                    raise ToolkitError("ImageSegData: the prefetch thread stopped without "
                                       "a batch; set prefetch to 0 to load in the layer") from None
        if kind == "error":
            self.error = payload
            raise payload
        return payload

    def close(self):
        """Stop the thread (it may be blocked on a full queue: drain it)."""
        self.stopping.set()
        while self.thread.is_alive():
            try:
                self.queue.get(timeout=0.1)
            except queue.Empty:
                pass


def _slot_arrays(buffer, data_shape, label_shape):
    """The (data, label) float32 arrays of one slot's shared memory."""
    data_size = int(np.prod(data_shape))
    values = np.ndarray((data_size + int(np.prod(label_shape)),), np.float32, buffer)
    return values[:data_size].reshape(data_shape), values[data_size:].reshape(label_shape)


def _worker_main(source, first, step, names, shapes, free, ready, parent):
    """A worker process: batches first, first + step, ... into the slots ``free`` hands it."""
    from multiprocessing import shared_memory
    dies_with_parent = die_with_parent(parent)
    if dies_with_parent is not None:
        dies_with_parent()
    try:
        import cv2
        cv2.setNumThreads(1)
    except (ImportError, AttributeError):   # pragma: no cover (no OpenCV)
        pass
    # registered again with the layer's own resource tracker (a set: once), which the
    # layer's unlink clears
    memories = [shared_memory.SharedMemory(name) for name in names]
    slots = [_slot_arrays(m.buf, *shapes) for m in memories]
    ready.send(("attached", None, first, 0.0))
    batch = first
    try:
        while True:
            slot = free.recv()
            if slot is None:
                break
            started = time.perf_counter()
            source.batch = batch
            data, label = source.next_batch()
            slots[slot][0][...] = data
            slots[slot][1][...] = label
            ready.send(("batch", slot, batch, time.perf_counter() - started))
            batch += step
    except BaseException as exc:  # handed to the layer, which re-raises it
        ready.send(("error", exc, batch, 0.0))
    finally:
        del slots
        for memory in memories:
            memory.close()


class ProcessPrefetcher:
    """``source``'s batches made in ``workers`` processes, at least ``depth`` ahead in all.

    ``get`` returns views of a shared-memory slot, valid until the next ``get`` (the layer
    copies them into its tops at once)."""

    def __init__(self, source, depth, workers):
        import multiprocessing
        import os
        from multiprocessing import shared_memory
        context = multiprocessing.get_context("spawn")
        n, crop = source.batch_size, source.crop
        self.shapes = ((n, 3, crop, crop), (n, 1, crop, crop))
        slot_bytes = 4 * sum(int(np.prod(shape)) for shape in self.shapes)
        per_worker = max(2, math.ceil(max(depth, 1) / workers))   # one being read, one made
        self.workers, self.start, self.next_batch = workers, source.batch, source.batch
        self.memories, self.free, self.ready, self.processes = [], [], [], []
        self.slots, self.held, self.error = [], None, None
        self.batch_seconds = []   # the time each batch took its worker (a bench reads it)
        try:
            for worker in range(workers):
                memories = [shared_memory.SharedMemory(create=True, size=slot_bytes)
                            for _ in range(per_worker)]
                self.memories.append(memories)
                # pipes, not queues: a queue's semaphores would outlive a `caffe train`
                # that ends without finalising Python (a warning of leaked semaphores)
                free_get, free_put = context.Pipe(duplex=False)
                ready_get, ready_put = context.Pipe(duplex=False)
                for slot in range(per_worker):
                    free_put.send(slot)
                self.free.append(free_put)
                self.ready.append(ready_get)
                process = context.Process(
                    target=_worker_main, name=f"ImageSegData-worker-{worker}", daemon=True,
                    args=(source, source.batch + worker, workers, [m.name for m in memories],
                          self.shapes, free_get, ready_put, os.getpid()))
                process.start()
                free_get.close()    # the worker's ends: closed here, so that a worker's
                ready_put.close()   # death reads as the end of its pipe
                self.processes.append(process)
            for worker in range(workers):
                self._wait(worker)           # every worker has mapped its slots: the names
            for memories in self.memories:   # can go, so nothing outlives the processes
                for memory in memories:
                    memory.unlink()
            self.slots = [[_slot_arrays(m.buf, *self.shapes) for m in memories]
                          for memories in self.memories]
        except BaseException:
            for memories in self.memories:
                for memory in memories:
                    try:
                        memory.unlink()
                    except FileNotFoundError:   # unlinked already
                        pass
            self.close()
            raise

    def get(self):
        """(data, label) of the next batch: views valid until the next ``get``."""
        if self.error is not None:
            raise self.error
        self._release()
        worker = (self.next_batch - self.start) % self.workers
        kind, slot, batch, seconds = self._wait(worker)
        if kind == "error":
            self.error = slot
            raise slot
        if batch != self.next_batch:   # pragma: no cover (the order is by construction)
            raise ToolkitError(f"ImageSegData: worker {worker} made batch {batch}, "
                               f"expected {self.next_batch}")
        self.held = (worker, slot)
        self.next_batch += 1
        self.batch_seconds.append(seconds)
        return self.slots[worker][slot]

    def _wait(self, worker):
        """The next message of ``worker``: (kind, slot or exception, batch, seconds)."""
        while True:
            if self.ready[worker].poll(WAIT_SECONDS):
                try:
                    return self.ready[worker].recv()
                except EOFError:   # the worker's end is closed: it has stopped
                    self.processes[worker].join(WAIT_SECONDS)
            if not self.processes[worker].is_alive():
                self.error = ToolkitError(
                    f"ImageSegData: data worker {worker} stopped (exit code "
                    f"{self.processes[worker].exitcode}) without a batch; set "
                    "workers to 0 to prefetch in a thread")
                raise self.error from None

    def _release(self):
        if self.held is not None:
            worker, slot = self.held
            self.free[worker].send(slot)
            self.held = None

    def close(self):
        """Stop the workers and free the shared memory."""
        for free in self.free:
            try:
                free.send(None)
            except OSError:   # the worker has gone
                pass
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        self.slots = []
        for memories in self.memories:
            for memory in memories:
                try:
                    memory.close()
                except BufferError:   # a view of the last batch is still alive somewhere
                    pass
        self.memories, self.processes, self.free, self.ready = [], [], [], []
