"""Observers are woken only for the frames they read (nabu_pipeline/pipeline_worker.py).

pipecat's WorkerObserver queued every processed frame and every push for every observer,
about a hundred queue puts and task wake-ups on the event loop per 20 ms of microphone
audio, none of them read (issue 18). These check what each observer is still given."""

from pipecat.frames.frames import InputAudioRawFrame, TTSTextFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.observers.turn_tracking_observer import TurnTrackingObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.asyncio.task_manager import TaskManager

from nabu_pipeline.pipeline_worker import NabuPipelineWorker, WatchedFramesObserver
from processors.false_interruptions import UnplayedSentences


class EveryPush(BaseObserver):
    pass


class FirstPush(BaseObserver):
    def __init__(self):
        super().__init__(observe_every_push=False)


class ReadsProcessed(BaseObserver):
    async def on_process_frame(self, data: FrameProcessed):
        pass


async def test_observers_are_given_only_the_frames_they_read():
    every, first, processed, unplayed = (
        EveryPush(),
        FirstPush(),
        ReadsProcessed(),
        UnplayedSentences(),
    )
    observer = WatchedFramesObserver(observers=[every, first, processed, unplayed])
    await observer.setup(TaskManager())
    queues = {o: p.queue for o, p in observer._proxies.items()}
    a, b = FrameProcessor(), FrameProcessor()
    audio = InputAudioRawFrame(audio=b"\0" * 640, sample_rate=16000, num_channels=1)
    sentence = TTSTextFrame("It is nine o'clock.", text_type="sentence")
    # Unbounded queues take a put without yielding, so nothing is drained while we count.
    for frame in (audio, sentence):
        await observer.on_process_frame(FrameProcessed(a, frame, FrameDirection.DOWNSTREAM, 0))
        for _ in range(2):  # its first push, then a further one
            await observer.on_push_frame(FramePushed(a, b, frame, FrameDirection.DOWNSTREAM, 0))
    got = {o: [q.get_nowait() for _ in range(q.qsize())] for o, q in queues.items()}
    kinds = {o: [(type(d).__name__, type(d.frame).__name__) for d in v] for o, v in got.items()}
    pushed = ("FramePushed", "InputAudioRawFrame")
    said = ("FramePushed", "TTSTextFrame")
    assert kinds[every] == [pushed, pushed, said, said]  # no processed frames
    assert kinds[first] == [pushed, said]
    assert kinds[processed] == [
        ("FrameProcessed", "InputAudioRawFrame"),
        pushed,
        pushed,
        ("FrameProcessed", "TTSTextFrame"),
        said,
        said,
    ]
    assert kinds[unplayed] == [said, said]  # every push of a sentence, nothing else
    await observer.cleanup()


async def test_nabus_worker_keeps_pipecats_own_observers():
    mine = EveryPush()
    worker = NabuPipelineWorker(
        Pipeline([FrameProcessor()]), observers=[mine], enable_rtvi=False, idle_timeout_secs=None
    )
    assert isinstance(worker._observer, WatchedFramesObserver)
    kept = worker._observer._observers
    assert mine in kept and any(isinstance(o, TurnTrackingObserver) for o in kept)
