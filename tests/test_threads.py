"""Thread control: the context manager restores the caller's settings, auto follows work, cores, affinity,
load and LFEVAL_THREADS, and training gives the same weights on a busy machine."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import lfeval
from lfeval.cli import main
from lfeval.models.architectures import LSTMDecoder
from lfeval.threads import ENV, choose, limit, other_load, work_of

SMALL, LARGE = 1e6, 1e12


@pytest.fixture
def busy():
    """One competing single-threaded busy process (as in the issue's measurements)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
    lfeval.threads._LAST_LOAD[0] = -float("inf")  # no reading from before it started
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def _blas_threads():
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_limit_restores_the_callers_settings_even_on_error(no_env):
    outer = torch.get_num_threads()
    blas = _blas_threads()
    try:
        torch.set_num_threads(3)
        with limit(1) as n:
            assert n == 1 and torch.get_num_threads() == 1
            assert all(t == 1 for t in _blas_threads())
            with limit(2):
                assert torch.get_num_threads() == 2
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3 and _blas_threads() == blas
        with pytest.raises(RuntimeError, match="inside"):
            with limit(1):
                raise RuntimeError("inside")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(outer)


def test_auto_follows_work_cores_and_load(no_env):
    assert choose("auto", work=SMALL, cores=2, load=1.5) == 1  # a small model on a loaded machine
    assert choose("auto", work=SMALL, cores=64, load=0.0) == 1  # small work gains nothing from threads
    assert choose("auto", work=LARGE, cores=2, load=0.0) == 2
    assert choose("auto", work=LARGE, cores=2, load=1.0) == 1  # one core taken by another process
    assert choose("auto", work=LARGE, cores=8, load=3.2) == 5
    assert choose("auto", work=LARGE, cores=2, load=9.0) == 1
    assert choose("auto", work=LARGE, cores=2, load=9.0, adapt_to_load=False) == 2  # training: load ignored
    assert choose("auto", work=3 * lfeval.threads.WORK_PER_THREAD, cores=8, load=0.0) == 3
    assert choose(4, work=SMALL, cores=2, load=2.0) == 4  # an explicit count is used as given


def test_lfeval_threads_environment_variable(monkeypatch):
    monkeypatch.setenv(ENV, "3")
    assert choose("auto", work=SMALL, cores=2, load=2.0) == 3
    assert choose(1) == 1  # an explicit argument wins over the environment
    with limit() as n:
        assert n == 3 and torch.get_num_threads() == 3
    monkeypatch.setenv(ENV, "auto")
    assert choose("auto", work=SMALL, cores=8, load=0.0) == 1


def test_a_busy_process_is_measured_and_auto_leaves_it_its_core(no_env, busy):
    assert other_load(samples=10) >= 0.8
    assert choose("auto", work=LARGE, cores=2) == 1


def test_the_command_pinned_to_one_core(no_env):
    """The ``lfeval`` command sets OMP_WAIT_POLICY before torch loads, and a process pinned to one core gets
    one thread, whatever the machine has (one real process for both)."""
    code = ("import os, sys; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); sys.argv[0] = 'lfeval'; "
            "import lfeval.threads as t; print(os.environ.get('OMP_WAIT_POLICY'), t.available_cores(), "
            "t.choose('auto', work=1e12, load=0.0))")
    env = {k: v for k, v in os.environ.items() if k not in (ENV, "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=os.path.dirname(os.path.dirname(lfeval.__file__)))
    assert out.stdout.split() == ["PASSIVE", "1", "1"]


def test_only_the_command_sets_omp_wait_policy():
    for argv, orig, expected in [(["/venv/bin/lfeval", "run"], ["python", "/venv/bin/lfeval", "run"], "PASSIVE"),
                                 (["/a/lfeval/cli.py", "run"], ["python", "-m", "lfeval.cli", "run"], "PASSIVE"),
                                 (["script.py"], ["python", "script.py"], None),
                                 (["-c"], ["python", "-c", "import lfeval"], None)]:
        environ = {}
        lfeval._command_environment(environ, argv, orig)
        assert environ.get("OMP_WAIT_POLICY") == expected, argv
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    lfeval._command_environment(environ, ["lfeval"], ["python", "lfeval"])
    assert environ["OMP_WAIT_POLICY"] == "ACTIVE"  # a user's choice is kept


def test_work_of_counts_multiply_adds(no_env):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(27, 4)).train()
    # conv: 3x3 outputs x 3 channels, each 2 x 3 x 3 multiply-adds; linear: 27 x 4; x batch 5
    assert work_of(net, (2, 5, 5), batch=5) == 5 * (27 * 18 + 27 * 4)
    assert net.training  # the mode is restored
    lstm = lfeval.models.build_encoder("time_series", (2, 10), 3)  # 2 channels x 10 steps
    # bidirectional LSTM (hidden 64): one step (the steps are sequential), per direction 4 gates x 64 x (2 inputs +
    # 64 hidden); proj 128 -> 3. The series' length does not change it.
    assert work_of(lstm, (2, 10)) == 2 * 4 * 64 * (2 + 64) + 128 * 3
    assert work_of(lfeval.models.build_encoder("time_series", (2, 150), 3), (2, 150)) == work_of(lstm, (2, 10))
    # so a 150-step LSTM autoencoder (GunPoint's) trains with one thread at its batch of 8 (2 threads: 9x slower)
    encoder = lfeval.models.build_encoder("time_series", (1, 150), 8)
    autoencoder = nn.Sequential(encoder, LSTMDecoder(encoder))
    assert choose("auto", work=work_of(autoencoder, (1, 150), batch=8), cores=2, load=0.0) == 1
    scripted = torch.jit.script(nn.Linear(3, 2))  # refuses forward hooks: its parameters are counted
    assert work_of(scripted, (3,), batch=4) == 4 * (3 * 2 + 2)


def test_training_restores_threads_and_gives_the_same_weights_under_load(no_env, digits, busy):
    """Training's thread count never follows the load: the same seed gives the same weights with a busy
    process beside it (oneDNN's convolution gradients would differ between 1 and 2 threads)."""
    outer = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        loaded = lfeval.models.train_encoder(digits, epochs=3, seed=0, display_progressbar=False)
        assert torch.get_num_threads() == 2
        busy.kill()
        busy.wait()
        time.sleep(0.2)
        idle = lfeval.models.train_encoder(digits, epochs=3, seed=0, display_progressbar=False)
        single = lfeval.models.train_encoder(digits, epochs=3, seed=0, display_progressbar=False, threads=1)
    finally:
        torch.set_num_threads(outer)
    for a, b, c in zip(loaded.parameters(), idle.parameters(), single.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_cli_threads_flag_is_validated(tmp_path, capsys):
    assert main(["run", "--threads", "none", "--out", str(tmp_path)]) == 2
    assert "`threads` must be 'auto' or a positive integer" in capsys.readouterr().err


def test_explainers_choose_threads_for_their_batch_inside_a_scope_only(no_env, ae, digits, monkeypatch):
    """In lfeval run's scope, IntegratedGradients (50 encoder passes per input) takes the free cores and
    Saliency (one pass) one thread; outside a scope a library call leaves torch's setting alone."""
    if lfeval.threads.available_cores() < 2:
        pytest.skip("needs two cores")
    monkeypatch.setattr(lfeval.threads, "_recent_load", lambda: 0.0)  # an idle machine
    seen = []
    handle = ae.module.register_forward_hook(lambda *args: seen.append(torch.get_num_threads()))
    x = digits.x_test[:128].numpy()
    outer = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with lfeval.threads.scope("auto"):
            seen.clear()
            lfeval.explain(ae, x, method="IntegratedGradients")
            assert max(seen) == lfeval.threads.available_cores()
            seen.clear()
            lfeval.explain(ae, x, method="Saliency")
            assert set(seen) == {1}
        with lfeval.threads.scope(1):
            seen.clear()
            lfeval.explain(ae, x, method="IntegratedGradients")
            assert set(seen) == {1}
        torch.set_num_threads(2)
        seen.clear()
        lfeval.explain(ae, x, method="IntegratedGradients")  # no scope: the caller's 2 threads
        assert set(seen) == {2} and torch.get_num_threads() == 2
    finally:
        handle.remove()
        torch.set_num_threads(outer)


@pytest.mark.filterwarnings("ignore:.*looks collapsed")  # one epoch on 200 digits
def test_the_run_setting_reaches_stages_and_training_through_the_scope_only(no_env, digits, monkeypatch):
    """One road: inside ``lfeval run``'s scope, ``limit()`` and ``train_encoder`` without a ``threads`` argument
    use the scope's setting; outside a scope they mean "auto", and an explicit argument wins."""
    from lfeval.models import training as training_mod

    seen, fit = [], training_mod._fit

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return fit(*args, **kwargs)

    monkeypatch.setattr(training_mod, "_fit", spy)
    outer = torch.get_num_threads()
    small = dataclasses.replace(digits, x_train=digits.x_train[:200], y_train=digits.y_train[:200])
    try:
        assert lfeval.threads.current() is None and lfeval.threads.resolve() == "auto"
        for setting in (1, 2):
            with lfeval.threads.scope(str(setting)):
                assert lfeval.threads.current() == setting == lfeval.threads.resolve()
                with limit(work=LARGE, adapt_to_load=False) as n:
                    assert n == setting == torch.get_num_threads()
                lfeval.models.train_encoder(small, epochs=1, min_steps=0, display_progressbar=False)
                lfeval.models.train_encoder(small, epochs=1, min_steps=0, display_progressbar=False, threads=1)
        assert seen == [1, 1, 2, 1]
    finally:
        torch.set_num_threads(outer)
