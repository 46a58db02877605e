"""The callback base and its bus: every hook declared, called in order, records delivered in order."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import pytest

import training
from training.callbacks.base import HOOKS, Callback, CallbackList, Record


def _all_callback_classes() -> list[type[Callback]]:
    for mod in pkgutil.walk_packages(training.__path__, "training."):
        importlib.import_module(mod.name)
    found, todo = [], list(Callback.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return [c for c in found if c.__module__.startswith("training.")]


def test_every_hook_a_callback_implements_is_declared_on_callback():
    classes = _all_callback_classes()
    names = {c.__name__ for c in classes}
    assert {"ConsoleCallback", "JsonlCallback", "HealthMonitorCallback", "CheckpointCallback"} <= names
    for cls in classes:
        hooks = [n for n, v in vars(cls).items() if callable(v) and (n.startswith("on_") or n == "flush")]
        undeclared = [n for n in hooks if n not in HOOKS]
        assert not undeclared, f"{cls.__name__} implements hooks Callback does not declare: {undeclared}"
        for n in hooks:  # one uniform signature: the subclass takes what the base hook is called with
            want = len(inspect.signature(getattr(Callback, n)).parameters)
            assert len(inspect.signature(getattr(cls, n)).parameters) == want, f"{cls.__name__}.{n}"


def test_hooks_are_the_declared_on_methods_and_flush():
    assert set(HOOKS) == {n for n in vars(Callback) if n.startswith("on_")} | {"flush"}
    assert "on_record" in HOOKS and "on_validation_batch_end" in HOOKS


class Log(Callback):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.log.append(f"{self.name}:epoch{epoch}")

    def on_record(self, trainer: Any, record: Record) -> None:
        self.log.append(f"{self.name}:{record.kind}")


class Alarm(Log):
    """Raises an alert from inside on_record, as the health monitor does."""

    def on_record(self, trainer: Any, record: Record) -> None:
        super().on_record(trainer, record)
        if record.kind == "step":
            trainer.callbacks.emit(trainer, Record("alert", record.step, record.epoch))


class Host:
    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = CallbackList(callbacks)


def test_a_record_emitted_inside_on_record_follows_its_cause_in_every_sink():
    log: list[str] = []
    host = Host([Alarm("alarm", log), Log("sink", log)])  # the producer of the alert stands first
    host.callbacks.emit(host, Record("step", 1, 1))
    assert log == ["alarm:step", "sink:step", "alarm:alert", "sink:alert"]


def test_hooks_run_in_list_order_and_undeclared_hooks_are_refused():
    log: list[str] = []
    bus = CallbackList([Log("a", log)])
    bus.insert(0, Log("first", log))
    bus.append(Log("last", log))
    bus.call("on_epoch_start", None, 3)
    assert log == ["first:epoch3", "a:epoch3", "last:epoch3"] and len(bus) == 3 and bus[0].name == "first"
    with pytest.raises(ValueError, match=r"callback hook: expected one of on_train_start, .*, found 'on_epoch_begin'"):
        bus.call("on_epoch_begin", None, 3)


class Counter(Callback):
    def __init__(self) -> None:
        self.n = 0

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n = state["n"]


def test_state_travels_by_class_name_and_a_new_callback_starts_fresh():
    old = Counter()
    old.n = 7
    saved = CallbackList([old]).state_dict()
    assert saved == {"Counter": {"n": 7}}
    fresh, other = Counter(), Log("new", [])
    CallbackList([fresh, other]).load_state_dict(saved)
    assert fresh.n == 7


def test_two_callbacks_of_one_class_keep_two_states():
    """Keyed by class name alone, the second instance's state overwrote the first's (issue 26)."""
    a, b = Counter(), Counter()
    a.n, b.n = 3, 5
    saved = CallbackList([a, Log("x", []), b]).state_dict()
    assert saved["Counter"] == {"n": 3} and saved["Counter#2"] == {"n": 5}
    ra, rb = Counter(), Counter()
    CallbackList([ra, rb]).load_state_dict(saved)
    assert (ra.n, rb.n) == (3, 5)
