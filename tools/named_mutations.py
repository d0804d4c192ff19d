"""Introduce each bug an audit named (issue 15) into a scratch copy and check a test catches it.

    python tools/named_mutations.py            # every mutation (the Ray ones take minutes)
    python tools/named_mutations.py --no-ray   # skip those that need a Ray sweep
    python tools/named_mutations.py 3 7        # only these (numbers as listed)

Each mutation is a literal edit of one file; the copy is made from the working tree, the named
tests run there with ``-x``, and a mutation counts as caught when they fail. A mutation whose
text no longer matches the code is reported as STALE (update it here), never as caught.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Mutation:
    what: str
    path: str
    old: str
    new: str
    tests: list[str]
    ray: bool = False


ZO = "zeroflow/optim/zo.py"
REF = "tests/test_optim_reference.py::test_zo_rules_equal_torch_optim_fed_the_same_estimate"
CONSERVE = ("tests/test_optim_reference.py::"
            "test_conserve_keeps_the_best_candidate_and_commits_the_matching_state")
MUTATIONS = [
    Mutation("ZO-SGD ignores momentum", ZO,
             "        m = group[\"momentum\"]\n        if m == 0:",
             "        m = group[\"momentum\"]\n        if True:", [REF]),
    Mutation("ZO-SGD dampens momentum", ZO,
             "u = buf.mul_(m).add_(g)  #", "u = buf.mul_(m).add_(g, alpha=1 - m)  #", [REF]),
    Mutation("ZO-Adam drops bias correction", ZO,
             "bias1 = 1 - beta1**t\n        bias2_sqrt = math.sqrt(1 - beta2**t)",
             "bias1 = 1.0\n        bias2_sqrt = 1.0", [REF]),
    Mutation("ZO weight decay ignored", ZO, "                if wd:\n",
             "                if False:\n", [REF]),
    Mutation("Conserve θ + lr·u commits the first moment un-negated", ZO,
             "state[\"momentum_buffer\"] = u if commit > 0 else u.neg()",
             "state[\"momentum_buffer\"] = u", [CONSERVE]),
    Mutation("Conserve Adam θ + lr·u commits m un-negated", ZO,
             "state[\"exp_avg\"] = m if commit > 0 else m.neg_()", "state[\"exp_avg\"] = m",
             [CONSERVE]),
    Mutation("Conserve never keeps a candidate", ZO,
             "            if f < best_f:", "            if False:",
             ["tests/test_optim.py::test_conserve_never_ends_a_step_worse", CONSERVE]),
    Mutation("NaN inside Conserve wins", ZO, "            if f < best_f:",
             "            if not f >= best_f:",
             ["tests/test_optim_reference.py::"
              "test_conserve_with_nonfinite_candidates_keeps_theta_and_state"]),
    Mutation("Rademacher directions draw Gaussians", "zeroflow/optim/perturb.py",
             "        if self.perturbation == \"gaussian\":", "        if True:",
             ["tests/test_optim_reference.py::"
              "test_rademacher_directions_are_plus_minus_one_and_gaussian_are_not"]),
    Mutation("EASE weights other subspaces α, not α/t", "zeroflow/methods/ease.py",
             "alpha / t if t else 1.0", "alpha if t else 1.0",
             ["tests/test_methods.py::test_ease_reweighting_weights_other_subspaces_alpha_over_t"]),
    Mutation("EASE completes from the last task's classes only", "zeroflow/methods/ease.py",
             "later = range(task_ranges[s].start, task_ranges[t].stop)",
             "later = range(task_ranges[t].start, task_ranges[t].stop)",
             ["tests/test_methods.py::test_ease_completion_over_several_later_tasks"]),
    Mutation("ZO-FC does not mask earlier tasks' logits", "zeroflow/methods/zofc.py",
             "        if start:", "        if False:",
             ["tests/test_methods.py::test_zofc_loss_ignores_earlier_tasks_logits"]),
    Mutation("training closure does not reseed dropout", "zeroflow/steppers.py",
             "        learner.model.reseed(dropout_seed)\n", "",
             ["tests/test_methods.py::"
              "test_training_closure_gives_f_plus_and_f_minus_the_same_dropout_masks"]),
    Mutation("hybrid FO→ZO never switches to FO", "zeroflow/optim/schedule.py",
             "return epoch_in_task < self.fo_epochs", "return False",
             ["tests/test_trial.py::"
              "test_hybrid_runs_first_order_then_forward_passes_within_each_task"]),
    Mutation("ZO divergence goes unnoticed", "zeroflow/steppers.py",
             "if not math.isfinite(loss_value):", "if False:",
             ["tests/test_trial.py::test_zo_divergence_stops_the_trial_naming_lr_and_mu"]),
    Mutation("checkpoint of another config is accepted", "zeroflow/checkpoint.py",
             "    if diff:\n        pairs", "    if False:\n        pairs",
             ["tests/test_trial.py::test_cli_resumes_from_checkpoint_dir_and_refuses_another_config"]),
    Mutation("zeroflow run ignores --checkpoint-dir on start", "zeroflow/trial.py",
             "source = resume_from if resume_from is not None else checkpoint_dir",
             "source = resume_from",
             ["tests/test_trial.py::test_cli_resumes_from_checkpoint_dir_and_refuses_another_config"]),
    Mutation("default store in the home directory", "zeroflow/tracking/store.py",
             "root = Path(launch_dir or os.getcwd()).resolve()",
             "root = Path(launch_dir or Path.home()).resolve()",
             ["tests/test_trial.py::"
              "test_cli_run_without_tracking_uri_writes_sqlite_store_in_launch_dir"]),
    Mutation("space strings evaluated", "zeroflow/sweep/validate.py",
             "            return float(value)", "            return float(eval(value))",
             ["tests/test_sweep_space.py::test_no_string_or_yaml_tag_in_a_space_is_ever_evaluated"]),
    Mutation("space YAML read with the unsafe loader", "zeroflow/sweep/space.py",
             "raw = yaml.safe_load(text)", "raw = yaml.unsafe_load(text)",
             ["tests/test_sweep_space.py::test_no_string_or_yaml_tag_in_a_space_is_ever_evaluated"]),
    Mutation("sweep/resume errors escape as tracebacks", "zeroflow/cli/__init__.py",
             "    except ZeroflowError as err:", "    except KeyboardInterrupt as err:",
             ["tests/test_sweep_space.py::test_cli_sweep_and_resume_errors_are_one_line"]),
    Mutation("override rules never reach Ray trials", "zeroflow/sweep/resolve.py",
             "            if self.key in settings and matches(when, config):",
             "            if False:",
             ["tests/test_sweep_ray.py::test_four_trial_sweep_logs_parent_and_children"], ray=True),
    Mutation("samplers never reach Ray's param space", "zeroflow/sweep/ray_space.py",
             "    for key, spec in space.sample.items():\n        (kind, args), = spec",
             "    for key, spec in {}.items():\n        (kind, args), = spec",
             ["tests/test_sweep_ray.py::test_four_trial_sweep_logs_parent_and_children"], ray=True),
    Mutation("a second launch of an existing sweep is not refused", "zeroflow/sweep/driver.py",
             "    if tune.Tuner.can_restore(experiment):",
             "    if False and tune.Tuner.can_restore(experiment):",
             ["tests/test_sweep_ray.py::test_four_trial_sweep_logs_parent_and_children"], ray=True),
    Mutation("trainable ignores tune.get_checkpoint()", "zeroflow/sweep/trainable.py",
             "    restored = tune.get_checkpoint()", "    restored = None",
             ["tests/test_sweep_ray.py::test_trial_dying_mid_task_is_retried_from_its_checkpoint",
              "tests/test_sweep_resume.py"], ray=True),
    Mutation("full finetune's loss keeps old-class logits after task 0",
             "zeroflow/methods/finetune.py", "if self.full and self.task > 0:", "if False:",
             ["tests/test_methods.py::"
              "test_finetune_full_loss_is_all_logits_on_task_0_then_new_class_logits_only"]),
    Mutation("full finetune trains the adapter, not the backbone", "zeroflow/methods/finetune.py",
             "        if self.full:\n            return [ParamGroup(",
             "        if False:\n            return [ParamGroup(",
             ["tests/test_methods.py::"
              "test_finetune_full_trains_every_backbone_tensor_and_adapter_scope_none"]),
    Mutation("a trained backbone is left out of the checkpoint", "zeroflow/methods/finetune.py",
             "self.trains_backbone = self.full", "self.trains_backbone = False",
             ["tests/test_methods.py::"
              "test_finetune_full_checkpoints_the_backbone_and_resumes_bit_identical"]),
    Mutation("ease_variant: omni runs standard EASE", "zeroflow/methods/__init__.py",
             "        cls = EaseOmni", "        cls = Ease",
             ["tests/test_methods.py::test_ease_omni_trains_task_0_only_and_predicts_with_"
              "pretrained_and_adapter_prototypes"]),
    Mutation("EASE's CUB recipe with alpha 0.1", "tune_spaces/table1.yaml",
             "epochs: 20, ease_alpha: 0.05}", "epochs: 20, ease_alpha: 0.1}",
             ["tests/test_sweep_space.py::"
              "test_shipped_spaces_resolve_every_method_and_dataset_to_its_cited_recipe"]),
    Mutation("an override rule that matches nothing is accepted", "zeroflow/sweep/validate.py",
             "        if not any(matches(when, {**space.base, **point}) for point in space.points"
             "()):",
             "        if False:",
             ["tests/test_sweep_space.py::"
              "test_override_rules_match_base_keys_and_refuse_rules_that_match_nothing"]),
]


def run(i: int, m: Mutation, scratch: Path) -> str:
    target = scratch / m.path
    if not target.exists():
        return f"STALE (no {m.path})"
    text = target.read_text()
    if text.count(m.old) != 1:
        return f"STALE ({m.old!r} found {text.count(m.old)} times in {m.path})"
    target.write_text(text.replace(m.old, m.new))
    try:
        env = {**os.environ, "PYTHONPATH": str(scratch)}
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests]
        done = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True)
        last = (done.stdout.strip().splitlines() or ["?"])[-1]
        return ("caught" if done.returncode == 1 else f"NOT CAUGHT (exit {done.returncode})"
                ) + f": {last}"
    finally:
        target.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", type=int, help="mutation numbers to run")
    parser.add_argument("--no-ray", action="store_true", help="skip mutations needing Ray")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="zf_named_mut_"))
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, scratch / name)
    failures = 0
    try:
        for i, m in enumerate(MUTATIONS, 1):
            if (args.only and i not in args.only) or (args.no_ray and m.ray):
                continue
            start = time.time()
            verdict = run(i, m, scratch)
            failures += not verdict.startswith("caught")
            print(f"{i:2d}. {m.what}: {verdict} [{time.time() - start:.0f} s] <- "
                  + ", ".join(t.split("::")[-1] for t in m.tests), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
