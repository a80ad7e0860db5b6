"""pipecat's PipelineWorker, whose observers are woken only for what they watch.

pipecat 1.14's WorkerObserver gives every observer its own queue and task, and puts on
each queue every frame every processor handles (`on_process_frame`) and every push of
a frame the observer wants each push of. No observer Nabu runs reads processed frames
(its own three, pipecat's turn tracking, RTVI, idle: none overrides `on_process_frame`),
and the one that wants every push (`UnplayedSentences`) reads only sentence frames. Yet
each 20 ms of microphone audio passes some twenty processors: about a hundred queue
puts and task wake-ups on the event loop for every frame, the largest part of its work
while Piper speaks the first sentence and Whisper decodes (a profile of `nabu bench`,
issue 18). Here a processed frame reaches only observers that override
`on_process_frame`, and an observer may name the frame types it reads in
`pushed_frame_types`; everything else is pipecat's.
"""

from __future__ import annotations

import functools

from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.worker import PipelineWorker
from pipecat.pipeline.worker_observer import WorkerObserver


@functools.cache
def _reads_processed_frames(observer_type: type) -> bool:
    return observer_type.on_process_frame is not BaseObserver.on_process_frame


class WatchedFramesObserver(WorkerObserver):
    """WorkerObserver that queues a frame only for the observers that would read it."""

    async def on_process_frame(self, data: FrameProcessed):
        if not self._proxies:
            return
        for proxy in self._proxies.values():
            if _reads_processed_frames(type(proxy.observer)):
                await proxy.queue.put(data)

    async def on_push_frame(self, data: FramePushed):
        # pipecat's own, plus the observer's `pushed_frame_types`.
        if not self._proxies:
            return
        frame = data.frame
        data.first_push = frame.id not in self._frames_pushed
        if data.first_push:
            self._frames_pushed[frame.id] = frame
        for proxy in self._proxies.values():
            observer = proxy.observer
            if not (data.first_push or observer.observe_every_push):
                continue
            types = getattr(observer, "pushed_frame_types", None)
            if types is not None and not isinstance(frame, types):
                continue
            await proxy.queue.put(data)


class NabuPipelineWorker(PipelineWorker):
    """PipelineWorker with a WatchedFramesObserver in place of pipecat's WorkerObserver."""

    def __init__(self, pipeline, **kwargs):
        super().__init__(pipeline, **kwargs)
        # The same observers pipecat gathered (ours, turn tracking, RTVI, idle), before
        # anything was set up: PipelineWorker uses its observer only once it runs.
        self._observer = WatchedFramesObserver(observers=self._observer._observers)
