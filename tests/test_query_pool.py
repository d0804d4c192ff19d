"""Query-parallel SPSA on Ray actors: replicas that exchange seeds and scalars only must train
exactly what the in-process optimizer trains, bit for bit, whatever K, also when a worker dies.
One Ray session (conftest's ``ray_session``) is shared by the module."""

import subprocess
import sys
import threading

import numpy as np
import pytest
import ray
import torch
from conftest import tiny_trial

from zeroflow.batches import BatchSpec
from zeroflow.distributed.lockstep import LockStepPool, share
from zeroflow.distributed.pool import ACTOR_PREFIX
from zeroflow.distributed.replica import Replica
from zeroflow.optim import Estimate
from zeroflow.steppers import training_closure
from zeroflow.trial import run_trial

pytestmark = pytest.mark.ray

SMALL = tiny_trial(init_cls=4, increment=6, epochs=1, limit_batches=3, q=4)
TRIAL = tiny_trial(init_cls=4, increment=3, epochs=2, limit_batches=2, q=4)


def _final_tensors(config, tmp_path, name):
    directory = tmp_path / name
    result = run_trial(config, checkpoint_dir=directory)
    ckpt = torch.load(directory / "trial.pt", weights_only=False)
    return result, ckpt["learner"]["tensors"]


def _same_matrix(a, b) -> bool:
    return np.array_equal(np.asarray(a.matrix.a), np.asarray(b.matrix.a), equal_nan=True)


def test_seed_shares_cover_the_seeds_in_order():
    seeds = list(range(10, 17))
    for n in (1, 2, 3, 7, 9):
        parts = [share(seeds, k, n) for k in range(n)]
        assert [s for p in parts for s in p] == seeds
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_merged_central_estimate_equals_one_evaluation_bit_for_bit():
    # losses whose float sum depends on the grouping: the merge must re-sum in seed order
    parts = [1e16, 1.0, -1e16, 1.0]
    in_order = sum_in_order(parts) / 4
    grouped = (sum_in_order(parts[:2]) + sum_in_order(parts[2:])) / 4
    assert in_order != grouped
    merged = Estimate.merge([Estimate([0, 1], [0.5, 0.6], grouped, None, parts[:2]),
                             Estimate([2, 3], [0.7, 0.8], grouped, None, parts[2:])])
    assert merged.loss == in_order
    assert merged.seeds == [0, 1, 2, 3] and merged.scalars == [0.5, 0.6, 0.7, 0.8]


def sum_in_order(values):
    total = 0.0
    for v in values:
        total += v
    return total


class SharedMessagePool(LockStepPool):
    """The protocol with messages handed over by reference: every replica receives the very
    same tensors, as processes sharing memory through a pipe do."""

    def __init__(self, replicas):
        self.replicas = replicas
        super().__init__(len(replicas))

    def _sync(self, ks, task, tensors, states):
        return {k: self.replicas[k].sync(task, tensors, states) for k in ks}

    def _call(self, requests):
        return [r.step(q) for r, q in zip(self.replicas, requests)]


@pytest.mark.parametrize("keys", [
    {"method": "finetune", "finetune_scope": "adapter"},
    {"method": "finetune", "finetune_scope": "full"},
    # the authors' code's forms: a buffer (EASE's prototypes) in the group, direction history
    {"method": "ease", "ease_perturb_prototypes": True, "history": 0.5,
     "history_mode": "direction", "sparsity": 0.3, "sparsity_mask": "infty",
     "sparsity_resample": "task"},
])
def test_protocol_without_ray_keeps_replicas_equal_to_in_process_steps(keys):
    config = {**SMALL, "optimizer": "zo-sgd", "batch_size": 8, **keys}
    base, trial = Replica(config), Replica(config)
    for r in (base, trial):
        r.sync(0, {}, None)
    specs = [BatchSpec(0, 0, 5, list(range(i, i + 8)), 100 + i) for i in range(4)]

    def closure(replica, spec):
        x, y = replica.batch(spec)
        return training_closure(replica.learner, replica.steppers[0].main, x, y, spec.dropout_seed)

    for r in (base, trial):  # momentum buffers exist before the pool syncs the trial's state
        r.steppers[0].main.step(closure(r, specs[0]))
    pool = SharedMessagePool([Replica(config), Replica(config)])
    pool.start_task(0, trial.learner, trial.steppers)
    for spec in specs[1:]:
        expected = base.steppers[0].main.step(closure(base, spec))
        loss = pool.step(0, trial.steppers[0].main, closure(trial, spec), spec)
        assert torch.equal(loss, expected)
    pool.finish_task()  # replicas' checksums against the trial's
    for other in (trial, *pool.replicas):
        for (name, a), (_, b) in zip(base.learner.state_dict().items(),
                                     other.learner.state_dict().items()):
            assert torch.equal(a, b), name


@pytest.mark.parametrize("optimizer", ["zo-sgd", "zo-adam-sign", "zo-sgd-conserve",
                                       "forward-grad"])
def test_replicas_train_the_in_process_tensors_bit_for_bit(ray_session, tmp_path, optimizer):
    config = {**SMALL, "method": "finetune", "optimizer": optimizer}
    base, expected = _final_tensors(config, tmp_path, "k0")
    for k in (1, 2):
        result, tensors = _final_tensors({**config, "query_workers": k}, tmp_path, f"k{k}")
        assert tensors.keys() == expected.keys()
        for name, value in expected.items():
            assert torch.equal(tensors[name], value), (optimizer, k, name)
        assert _same_matrix(result, base)
        stats = result.query_stats
        assert stats["steps"] == base.summary["steps"] and stats["recreated"] == 0
        if optimizer != "zo-sgd-conserve":  # conserve's candidates are evaluated by the trial
            assert result.summary["forward_passes"] == base.summary["forward_passes"]
        # per-step traffic is seeds, scalars, indices: a few hundred bytes at q = 4
        sent, received = stats["request_bytes"] / stats["messages"], (
            stats["reply_bytes"] / stats["messages"])
        assert sent < 1000 and received < 1000


def test_per_step_bytes_do_not_grow_with_the_model(ray_session):
    sizes = []
    for bottleneck in (4, 64):  # 16x the trainable tensors
        result = run_trial({**SMALL, "method": "finetune", "adapter_bottleneck": bottleneck,
                            "query_workers": 1})
        stats = result.query_stats
        sizes.append((stats["request_bytes"], stats["reply_bytes"], stats["task_push_bytes"]))
    assert sizes[0][:2] == sizes[1][:2]
    assert sizes[1][2] > 4 * sizes[0][2]  # what grows is the per-task push only


@pytest.mark.parametrize("extra", [dict(method="ease", optimizer="zo-sgd"),
                                   dict(method="zofc", optimizer="zo-sgd", hybrid_epochs=1)])
def test_trial_with_two_workers_prints_the_in_process_matrix(ray_session, extra):
    config = {**TRIAL, **extra}
    base = run_trial(config)
    pooled = run_trial({**config, "query_workers": 2})
    assert _same_matrix(pooled, base)
    assert pooled.summary["avg"] == base.summary["avg"]
    if extra["method"] == "zofc":  # every ZO step follows an FO change (the head; after the
        # hybrid FO epoch, the adapter too), so each one pushes to both workers
        assert pooled.query_stats["pushes"] == 2 * pooled.query_stats["steps"] > 0


def test_killed_worker_is_recreated_and_results_do_not_change(ray_session):
    config = {**TRIAL, "method": "ease", "optimizer": "zo-sgd"}
    base = run_trial(config)
    killed = []

    def kill_one(task, epoch):
        if (task, epoch) == (1, 1) and not killed:
            name = sorted(n for n in ray.util.list_named_actors() if n.startswith(ACTOR_PREFIX))[0]
            ray.kill(ray.get_actor(name))
            killed.append(name)

    result = run_trial({**config, "query_workers": 2}, on_epoch=kill_one)
    assert killed and result.query_stats["recreated"] == 1
    assert _same_matrix(result, base)
    assert result.summary["avg"] == base.summary["avg"]
    assert result.summary["forgetting"] == base.summary["forgetting"]


def test_cli_run_with_query_workers_prints_the_same_matrix(tmp_path):
    args = ["dataset=digits", "method=ease", "optimizer=zo-sgd", "q=4", "init_cls=4",
            "increment=3", "epochs=2", "limit_batches=2", "batch_size=16",
            "samples_per_class=20"]

    def matrix(*extra):
        out = subprocess.run([sys.executable, "-m", "zeroflow.cli", "run", *args, *extra,
                              "--no-track"], capture_output=True, text=True, cwd=tmp_path,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split("\n\n")[0], out.stderr

    outputs = {}
    threads = [threading.Thread(target=lambda k=k: outputs.__setitem__(
        k, matrix(f"query_workers={k}"))) for k in (0, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outputs[2][0] == outputs[0][0]
    assert "query pool:" in outputs[2][1]


def test_one_trial_sweep_places_its_workers_in_the_trial_placement_group(ray_session, tmp_path):
    # trial bundle 1 CPU + 2 workers x 0.5 CPU = the session's 2 CPUs: an actor created outside
    # the trial's placement group would find no free CPU and never start
    import yaml

    from zeroflow.sweep import run_sweep

    space = {"name": "pooled", "base": {**TRIAL, "method": "ease", "optimizer": "zo-sgd",
                                        "query_workers": 2, "worker_cpus": 0.5},
             "grid": {"seed": [0]}, "resources": {"cpu": 1}, "run": {"max_concurrent": 1}}
    path = tmp_path / "pooled.yaml"
    path.write_text(yaml.safe_dump(space))
    results, _ = run_sweep(path, storage=tmp_path / "runs",
                           tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", verbose=0)
    assert results.num_errors == 0 and len(results) == 1
    base = run_trial({**TRIAL, "method": "ease", "optimizer": "zo-sgd"})
    assert results[0].metrics["avg_accuracy"] == base.summary["avg"]
