"""Progress lines: durations as a person reads them, the time left at the pace so far, a heartbeat in long
steps. A fake clock stands in for time, so the figures are exact."""

import logging
import time

from segflow.progress import Countdown, Heartbeat, duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_durations_read_as_seconds_minutes_hours():
    assert [duration(s) for s in (0, 42.4, 60, 185, 3600, 7620)] == [
        "0 s",
        "42 s",
        "1 min 00 s",
        "3 min 05 s",
        "1 h 00 min",
        "2 h 07 min",
    ]


def test_countdown_estimates_the_time_left_from_the_steps_it_timed(caplog):
    clock = Clock()
    # A resumed training: 4 of 10 epochs were done by an earlier attempt, and are not timed.
    countdown = Countdown("2d fold 0: epoch", 10, done=4, clock=clock)
    with caplog.at_level(logging.INFO, logger="segflow.progress"):
        for _ in range(6):
            clock.now += 30
            countdown.step("loss 0.1")
    assert caplog.messages[0] == "2d fold 0: epoch 5/10 loss 0.1, about 2 min 30 s left"
    assert caplog.messages[1] == "2d fold 0: epoch 6/10 loss 0.1, about 2 min 00 s left"
    assert caplog.messages[-1] == "2d fold 0: epoch 10/10 loss 0.1"


def test_countdown_with_an_interval_reports_the_first_the_last_and_one_step_per_interval(caplog):
    clock = Clock()
    countdown = Countdown("preprocessing 2d: case", 100, interval=30, clock=clock)
    with caplog.at_level(logging.INFO, logger="segflow.progress"):
        for _ in range(100):
            clock.now += 1
            countdown.step()
    assert caplog.messages[0] == "preprocessing 2d: case 1/100, about 1 min 39 s left"
    assert caplog.messages[1] == "preprocessing 2d: case 31/100, about 1 min 09 s left"
    assert caplog.messages[-1] == "preprocessing 2d: case 100/100"
    assert len(caplog.messages) == 5  # cases 1, 31, 61, 91 and 100


def test_heartbeat_speaks_from_its_own_thread_while_a_step_blocks_and_stops_with_its_block(caplog):
    clock = Clock()
    heartbeat = Heartbeat("3d_fullres fold 0: epoch 1/1000", interval=0.01, clock=clock)
    clock.now = 125
    with caplog.at_level(logging.INFO, logger="segflow.progress"):
        with heartbeat:
            heartbeat.beat("training iteration 1/250")
            waited = 0.0
            while not caplog.messages and waited < 30:  # the step: this thread does nothing meanwhile
                time.sleep(0.01)
                waited += 0.01
        lines = len(caplog.messages)
        time.sleep(0.1)
        assert len(caplog.messages) == lines
    assert caplog.messages[0] == "3d_fullres fold 0: epoch 1/1000: training iteration 1/250, 2 min 05 s so far"
    assert Heartbeat("x").interval == 60  # the README's promise
