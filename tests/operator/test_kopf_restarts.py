"""main.run_restarting: kopf, stopped by an error of its own, starts again after a pause; an
error that keeps coming ends the process (the Deployment's restarts take over)."""
import logging

import pytest

from kubetune_operator import main


class Runs:
    """kopf.operator as run_restarting sees it: each call fails with the next error, then returns."""

    def __init__(self, *errors: BaseException):
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


class Clock:
    def __init__(self, step: float):
        self.now, self.step, self.slept = 0.0, step, []

    def time(self) -> float:
        self.now += self.step
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_kopf_stopped_by_an_error_runs_again_after_a_pause(caplog):
    runs, clock = Runs(RuntimeError("404 page not found"), ConnectionError("refused")), Clock(step=1.0)
    with caplog.at_level(logging.ERROR, logger="kubetune.operator"):
        main.run_restarting(runs, clock.sleep, clock.time)
    assert runs.calls == 3 and clock.slept == [main.RESTART_PAUSE_SECONDS] * 2
    assert "kopf stopped (RuntimeError: 404 page not found); starting it again" in caplog.text
    assert "restart 2 of at most 5" in caplog.text


def test_an_error_that_keeps_coming_ends_the_process():
    errors = [RuntimeError(f"failure {i}") for i in range(main.MAX_RESTARTS + 1)]
    runs, clock = Runs(*errors, RuntimeError("never reached")), Clock(step=1.0)
    with pytest.raises(RuntimeError, match=f"failure {main.MAX_RESTARTS}"):
        main.run_restarting(runs, clock.sleep, clock.time)
    assert runs.calls == main.MAX_RESTARTS + 1 and len(clock.slept) == main.MAX_RESTARTS


def test_failures_further_apart_than_the_window_never_add_up():
    errors = [RuntimeError("api server upgrade")] * (3 * main.MAX_RESTARTS)
    runs, clock = Runs(*errors), Clock(step=main.RESTART_WINDOW_SECONDS / 2)
    main.run_restarting(runs, clock.sleep, clock.time)
    assert runs.calls == 3 * main.MAX_RESTARTS + 1


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), SystemExit(0)])
def test_a_stop_is_never_restarted(stop):
    runs, clock = Runs(stop), Clock(step=1.0)
    with pytest.raises(type(stop)):
        main.run_restarting(runs, clock.sleep, clock.time)
    assert runs.calls == 1 and clock.slept == []
