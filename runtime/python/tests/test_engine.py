"""The installed wheel against the shipped model: the README's example, agreement with the CLI on the committed
dev lines, classify_many, the threshold controller, errors, and the GIL released while computing."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

import cosee_edge
from cosee_edge import CoseeError, Engine, InputError, PackageError, SettingError
from conftest import MODEL, REPO, cli_json_lines, dev_sentences

ANSWER_KEYS = {
    "label", "label_index", "probs", "exit_layer", "num_layers", "signal", "threshold", "signals",
    "skipped_exits", "stage_ms", "total_ms", "tokens", "truncated",
}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(str(MODEL))


def test_imported_from_the_installed_wheel():
    # The tests must exercise the built wheel, not a source tree on sys.path.
    assert "site-packages" in cosee_edge.__file__, cosee_edge.__file__
    assert cosee_edge.Engine.__module__ == "cosee_edge"
    assert cosee_edge.__version__


def test_readme_example(monkeypatch):
    monkeypatch.chdir(REPO)
    e = Engine("models/sst2-minilm-l6")
    a = e.classify("a tender, funny film")
    assert set(a) == ANSWER_KEYS
    assert a["label"] == "positive"
    assert 1 <= a["exit_layer"] <= a["num_layers"] == 6
    assert abs(sum(a["probs"]) - 1.0) < 1e-5
    assert len(a["signals"]) == a["exit_layer"]
    assert list(a["stage_ms"]) and all(v >= 0 for v in a["stage_ms"].values())


@pytest.mark.parametrize("args", [(), ("--threshold", "0"), ("--signal", "max_softmax", "--threshold", "0.9")])
def test_answers_equal_the_cli_on_the_dev_lines(engine, cosee_edge_bin, args):
    sentences = dev_sentences()
    assert len(sentences) == 40
    cli = cli_json_lines(cosee_edge_bin, sentences, *args)
    kwargs = {}
    if "--threshold" in args:
        kwargs["threshold"] = float(args[args.index("--threshold") + 1])
    if "--signal" in args:
        kwargs["signal"] = args[args.index("--signal") + 1]
    exits = set()
    for i, (text, want) in enumerate(zip(sentences, cli)):
        got = engine.classify(text, **kwargs)
        assert want["input"] == i + 1
        for key in ("label", "label_index", "exit_layer", "probs", "signals", "signal", "threshold", "tokens",
                    "truncated", "skipped_exits"):
            assert got[key] == want[key], (i, key, text)
        exits.add(got["exit_layer"])
    if not args:
        assert len(exits) > 1, "at the default τ the dev lines exit at more than one layer"


def test_classify_many_equals_classify(engine):
    sentences = dev_sentences()[:12]
    many = engine.classify_many(sentences)
    assert [a["label"] for a in many] == [engine.classify(s)["label"] for s in sentences]
    assert [a["exit_layer"] for a in many] == [engine.classify(s)["exit_layer"] for s in sentences]
    deep = engine.classify_many(tuple(sentences), threshold=0.0)
    assert {a["exit_layer"] for a in deep} == {6}
    assert engine.classify_many([]) == []


def test_threshold_and_signal_per_call_and_per_engine(engine):
    text = "a tender, funny film"
    assert engine.classify(text, threshold=0.0)["exit_layer"] == 6
    # max_softmax exits above τ: every exit is above 0, so the first answers.
    assert engine.classify(text, signal="max_softmax", threshold=0.0)["exit_layer"] == 1
    fixed = Engine(str(MODEL), threshold=0.0)
    assert fixed.threshold == 0.0 and fixed.signal == "energy" and fixed.controller is None
    assert fixed.classify(text)["exit_layer"] == 6
    assert engine.threshold == engine.manifest["default_threshold"]


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"signal": "bogus"}, "signal"),
        ({"signal": "entropy"}, "give threshold too"),
        ({"signal": "patience", "threshold": 7}, "threshold"),
    ],
)
def test_setting_errors_name_the_setting(engine, kwargs, says):
    with pytest.raises(SettingError, match=says) as info:
        engine.classify("a fine film", **kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, CoseeError)
    with pytest.raises(SettingError, match=says):
        Engine(str(MODEL), **kwargs)


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"budget_ms": 0}, "budget_ms"),
        ({"budget_ms": -3}, "budget_ms"),
        ({"budget_ms": float("inf")}, "budget_ms"),
        ({"budget_ms": 5, "percentile": 101}, "percentile"),
        ({"percentile": 50}, "give budget_ms too"),
        ({"budget_ms": 5, "threshold": 0.1}, "without threshold"),
    ],
)
def test_controller_setting_errors(kwargs, says):
    with pytest.raises(SettingError, match=says):
        Engine(str(MODEL), **kwargs)


def test_input_errors(engine):
    with pytest.raises(InputError, match="empty input"):
        engine.classify("")
    with pytest.raises(InputError, match="whitespace-only"):
        engine.classify(" \t ")
    with pytest.raises(InputError, match="single texts, but a pair"):
        engine.classify("one", "two")
    with pytest.raises(InputError, match="input 2: empty input"):
        engine.classify_many(["fine", "", "also fine"])
    with pytest.raises(InputError, match="input 1: .*pair"):
        engine.classify_many([("one", "two")])
    with pytest.raises(TypeError):
        engine.classify_many(["fine", 3])
    with pytest.raises(ValueError):  # InputError is a ValueError too
        engine.classify("")


def test_package_errors(tmp_path):
    with pytest.raises(PackageError, match="no-such-package"):
        Engine(str(tmp_path / "no-such-package"))
    broken = tmp_path / "broken"
    shutil.copytree(MODEL, broken)
    layer = broken / "layer_03.onnx"
    layer.write_bytes(layer.read_bytes()[:-100])
    with pytest.raises(PackageError, match="layer_03.onnx") as info:
        Engine(str(broken))
    assert "truncated" in str(info.value)


def test_manifest_and_properties(engine):
    m = engine.manifest
    assert m["num_layers"] == engine.num_layers == 6
    assert m["label_names"] == engine.labels == ["negative", "positive"]
    assert m["signal"]["name"] == engine.signal == "energy"
    assert "layer_01.onnx" in m["files"]
    assert engine.path.endswith("sst2-minilm-l6")
    assert "Engine(" in repr(engine)


def test_budget_runs_the_threshold_controller():
    e = Engine(str(MODEL), budget_ms=1000.0, percentile=90)
    state = e.controller
    assert state["budget_ms"] == 1000.0 and state["percentile"] == 90
    assert state["threshold"] == e.threshold and state["threshold"] in state["rungs"]
    assert state["observed_ms"] is None
    answers = e.classify_many(dev_sentences())
    assert all(a["threshold"] == state["threshold"] for a in answers)
    assert e.controller["observed_ms"] is not None
    # A budget no input can meet: the controller moves to faster rungs, one per batch of 32 answers.
    tight = Engine(str(MODEL), budget_ms=1e-6)
    start = tight.controller
    for _ in range(3):
        tight.classify_many(dev_sentences())
    end = tight.controller
    if len(start["rungs"]) > 1:
        assert end["rung"] > start["rung"], (start, end)
        assert end["threshold"] != start["threshold"]
    # A call's own threshold is outside the controller.
    assert tight.classify("fine", threshold=0.0)["exit_layer"] == 6


def test_the_gil_is_released_while_computing(engine):
    texts = dev_sentences() * 3
    done = threading.Event()

    def work():
        engine.classify_many(texts)
        done.set()

    worker = threading.Thread(target=work)
    ticks = 0
    started = time.perf_counter()
    worker.start()
    # If classify_many held the GIL for its whole call, this loop could not run until it returned.
    while not done.is_set():
        ticks += 1
    worker.join()
    elapsed = time.perf_counter() - started
    assert elapsed > 0.05, "the batch should take a while"
    assert ticks > 10_000, f"only {ticks} iterations in {elapsed:.2f} s: the GIL was held while computing"


def test_threads_share_one_engine(engine):
    sentences = dev_sentences()[:16]
    expected = [engine.classify(s)["label"] for s in sentences]
    results: dict[int, list[str]] = {}

    def work(k):
        results[k] = [engine.classify(s)["label"] for s in sentences]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[k] == expected for k in range(4))
