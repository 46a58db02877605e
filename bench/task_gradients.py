"""Task gradients on the shared trunk: how hard each component pushes the trunk, and whether they agree.

    python bench/task_gradients.py --run RUN [RUN ...] [--checkpoint last|best] [--batches 8]
        [--split train] [--seed 0] [--threads 1] [--weights model|ema] [--out ...] [--doc ...] [--no-doc]

For each run, its network, data split, component losses (with the class weights of its checkpoint) and
balancer (with its checkpoint state) are rebuilt as evaluation rebuilds them (``load_run``,
``build_data``); the network gets the training weights by default (``--weights model``: the gradient
an optimizer step sees is taken there, not at the EMA). On ``--batches`` disjoint training batches
of the run's batch size, drawn with ``--seed``, the run's ``Objective`` (train=True: diffusion time,
noise, guidance drop, clean pass) gives the six component losses, and for each component i alone

    g_i = d L_i / d theta_trunk        (torch.autograd.grad, graph retained across the six)

on the trunk parameters every component reaches (``ABRNet.trunk_parameters``). Per batch:
||g_i||, its share ||g_i|| / sum_j ||g_j||, the share after the balancer's weights w_i = dJ/dL_i of
its objective J (value-based strategies only: a gradient-based one shapes the trunk gradient itself),
the share of the weighted step's progress <w_i g_i, g> / ||g||^2 with g = sum_j w_j g_j (these sum to
1; a negative one means that task's gradient opposes the step), the cosines cos(g_i, g_j), and
||d L_i / d theta_head|| on the parameters of the head that answers i (the peak head answers three
components: their head gradients share those parameters). Reported: means over batches with 95 %
t-intervals, and per pair the fraction of batches with a negative cosine. Writes
bench/results/task_gradients.json and the ``task-gradients`` section of docs/results.md.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import add_output_args, machine, progress_bar, write_outputs  # noqa: E402
from data.cli import ArgumentParser, number, phase, run_main  # noqa: E402
from training.components import COMPONENTS, DISPLAY_NAMES, HEAD_GROUPS  # noqa: E402

DOC_KEY = "task-gradients"
PROG = "bench/task_gradients.py"  # argparse's prog and the start of its progress lines on stderr
HEAD_OF = {c: head for head, members in HEAD_GROUPS.items() for c in members}  # component -> head key


# --------------------------------------------------------------------------------------------
# the measurement


def component_gradients(losses: dict[str, Tensor], trunk: Sequence[nn.Parameter],
                        heads: dict[str, Sequence[nn.Parameter]]) -> tuple[Tensor, Tensor]:
    """Each loss's own gradient: (G [K, P] the flattened trunk gradients, head_norms [K] the norm on
    ``heads[name]``), K = len(losses) in their order. A parameter a loss does not reach (or a loss
    without a graph: no target in the batch) contributes zeros."""
    rows, head_norms = [], []
    for name, loss in losses.items():
        own = list(heads.get(name, ()))
        params = [*trunk, *own]
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        else:
            grads = (None,) * len(params)
        flat = [torch.zeros(p.numel()) if g is None else g.detach().reshape(-1).float().cpu()
                for p, g in zip(params, grads, strict=True)]
        rows.append(torch.cat(flat[: len(trunk)]))  # [P]
        head_norms.append(torch.cat(flat[len(trunk):]).norm() if own else torch.tensor(float("nan")))
    return torch.stack(rows), torch.stack(head_norms)  # [K P], [K]


def cosine_matrix(G: Tensor) -> Tensor:
    """[K, K] cosines between the rows of G [K, P] (float64); NaN in the rows/columns of a zero row."""
    G = G.double()
    norms = G.norm(dim=1)  # [K]
    unit = G / torch.where(norms > 0, norms, torch.nan)[:, None]
    C = unit @ unit.T  # [K K]
    C = ((C + C.T) / 2).clamp(-1.0, 1.0)  # exactly symmetric (a matmul's rounding need not be)
    C.diagonal()[norms > 0] = 1.0  # exactly 1, not 1 - rounding
    return C


def shares(values: Tensor) -> Tensor:
    """values / sum(values): each one's share of the total."""
    return values / values.sum()


def progress_shares(G: Tensor, w: Tensor) -> Tensor:
    """<w_i g_i, g> / ||g||^2 with g = sum_j w_j g_j (G [K, P], w [K]): each task's part of the weighted
    step along its own direction; sums to 1, negative where that task's gradient opposes the step."""
    parts = w.double()[:, None] * G.double()  # [K P]
    g = parts.sum(dim=0)  # [P]
    return parts @ g / g.dot(g)


def value_weights(balancer: nn.Module, losses: dict[str, Tensor]) -> Tensor | None:
    """w_i = dJ/dL_i of the balancer's objective J at these loss values (no statistic updated); None
    for a strategy that is not value-based (it forms the trunk gradient itself in its backward)."""
    from training.balancers import ValueBalancer

    if not isinstance(balancer, ValueBalancer):
        return None
    L = torch.stack([losses[n].detach().float().cpu() for n in balancer.names]).requires_grad_(True)  # [K]
    objective, _ = balancer.combine({n: L[i] for i, n in enumerate(balancer.names)}, update=False)
    (w,) = torch.autograd.grad(objective, L)
    return w.detach()


def t_interval(values: Sequence[float]) -> dict[str, Any]:
    """bench.quality_seeds.mean_interval ({"mean", "ci", "n"}: the 95 % Student-t interval of the mean)
    over the finite values (a batch whose gradient had no direction gives a NaN cosine)."""
    from bench.quality_seeds import mean_interval

    finite = [float(v) for v in values if math.isfinite(v)]
    return mean_interval(finite) if finite else {"mean": None, "ci": None, "n": 0}


# --------------------------------------------------------------------------------------------
# one run


def load(run_dir: str, which: str, weights: str):
    """(run, bundle, meta_loss, objective): the run rebuilt as evaluation does, its losses and balancer
    with the checkpoint's state, the network with ``weights`` ("model": training weights, "ema")."""
    from data.dataset import build_data
    from training.checkpoint import CheckpointError, load_model_state, load_run
    from training.objective import Objective
    from training.setup import build_meta_loss

    run = load_run(run_dir, which=which)
    state = run.checkpoint
    if weights == "model":
        load_model_state(run.model, state["model"], run_dir)
    elif state.get("ema") is None:
        raise ValueError(f"--weights ema: run '{run_dir}' has no EMA weights (training.ema_decay 0); "
                         "use --weights model")
    bundle = build_data(run.cfg.data, run.cfg.loss.class_weights)
    meta = build_meta_loss(run.cfg, run.stats, bundle.class_weights)
    try:
        meta.load_state_dict(state["meta_loss"])
    except (KeyError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"run '{run_dir}': balancer state does not fit its config ({reason})") from None
    objective = Objective(run.diffusion, meta.components, cond_drop_prob=run.cfg.model.cond_drop_prob,
                          head_input=run.cfg.loss.head_input)
    return run, bundle, meta, objective


def measure_run(run_dir: str, *, which: str, weights: str, split: str, batches: int, batch_size: int | None,
                seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    run, bundle, meta, objective = load(run_dir, which, weights)
    model = run.model.train()  # as in training (dropout, if any, on)
    dataset = getattr(bundle, split)
    B = batch_size or run.cfg.training.batch_size
    if len(dataset) < batches * B:
        raise ValueError(f"--batches {batches}: run '{run_dir}' has {len(dataset)} {split} recordings, fewer than "
                         f"{batches} batches of {B}; lower --batches or --batch-size")
    trunk = model.trunk_parameters()
    heads = {c: model.head_parameters()[HEAD_OF[c]] for c in COMPONENTS}
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[: batches * B]
    noise = torch.Generator().manual_seed(seed + 1)
    per_batch: dict[str, list[Any]] = {k: [] for k in ("loss", "norm", "share", "weight", "weighted_share",
                                                       "progress", "cos", "head_norm")}
    # Six backward passes a batch: a progress line on stderr per run (after the checks above, so that a
    # refused flag stays one error line) and a bar on a terminal counting the batches.
    with (phase(PROG, f"{run_dir}: {batches} batches of {B} ({split} split)"),
          progress_bar(batches, Path(run_dir).name, unit="batch") as bar):
        for b in range(batches):
            batch = dataset.batch(order[b * B: (b + 1) * B])
            out = objective(model, batch, noise, train=True)
            G, head_norms = component_gradients(out.losses, trunk, heads)  # [K P], [K]
            norms = G.double().norm(dim=1)  # [K]
            w = value_weights(meta.balancer, out.losses)
            per_batch["loss"].append([float(v.detach()) for v in out.losses.values()])
            per_batch["norm"].append(norms.tolist())
            per_batch["share"].append(shares(norms).tolist())
            per_batch["head_norm"].append(head_norms.tolist())
            per_batch["cos"].append(cosine_matrix(G).tolist())
            if w is not None:
                per_batch["weight"].append(w.tolist())
                per_batch["weighted_share"].append(shares(w.double() * norms).tolist())
                per_batch["progress"].append(progress_shares(G, w).tolist())
            bar.update(1)
    result = summarize(per_batch)
    result.update({
        "run": str(run_dir), "checkpoint": which, "weights": weights, "split": split, "batches": batches,
        "batch_size": B, "seed": seed, "strategy": run.cfg.loss.balancer.strategy,
        "step": int(run.checkpoint["step"]), "epoch": int(run.checkpoint["epoch"]),
        "trunk_parameters": sum(p.numel() for p in trunk),
        "head_parameters": {h: sum(p.numel() for p in ps) for h, ps in model.head_parameters().items()},
        "seconds": round(time.perf_counter() - t0, 1),
    })
    if not per_batch["weight"]:
        result["weights_note"] = (f"strategy {result['strategy']} forms the trunk gradient in its own backward: "
                                  "no value weights, weighted shares left out")
    return result


def summarize(per_batch: dict[str, list[Any]]) -> dict[str, Any]:
    """Means over batches with t-intervals: per component, and per pair (cosine, negative fraction)."""
    tasks: dict[str, dict[str, Any]] = {}
    for i, c in enumerate(COMPONENTS):
        tasks[c] = {key: t_interval([row[i] for row in rows]) for key, rows in per_batch.items()
                    if key != "cos" and rows}
    cos = np.asarray(per_batch["cos"], dtype=np.float64)  # [N K K]
    pairs = {}
    for i, a in enumerate(COMPONENTS):
        for j, b in enumerate(COMPONENTS):
            v = cos[:, i, j]
            finite = v[np.isfinite(v)]
            pairs[f"{a}|{b}"] = {**t_interval(v.tolist()),
                                 "negative_fraction": float((finite < 0).mean()) if len(finite) else None}
    return {"tasks": tasks, "cosine": pairs}


# --------------------------------------------------------------------------------------------
# the report


def _fmt(est: dict[str, Any], digits: int = 3) -> str:
    if est is None or est.get("mean") is None:
        return "–"
    text = f"{est['mean']:.{digits}f}"
    if est.get("ci"):
        lo, hi = est["ci"]
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


def render(result: dict[str, Any]) -> str:
    lines = [
        "## Task gradients on the shared trunk", "",
        f"`{result['command']}`", "",
        f"Machine: {result['machine']}; {result['threads']} thread(s). Date: {result['date']}. Each run: "
        f"{result['batches']} training batches of the run's batch size, the run's own objective (train=True), the "
        "gradient of each component loss alone on the trunk parameters every component reaches "
        "(`ABRNet.trunk_parameters`). Means over batches with 95 % t-intervals. *Share*: ‖g_i‖ / Σ ‖g_j‖; "
        "*weighted*: the same with the balancer's weights w_i = ∂J/∂L_i; *progress*: ⟨w_i g_i, g⟩ / ‖g‖² "
        "with g = Σ w_j g_j (sums to 1; < 0: that task opposes the step); *head*: ‖∂L_i/∂θ_head‖ on the "
        "head that answers it (the three peak components share one head).",
    ]
    for r in result["runs"]:
        lines += ["", f"### {r['run']} ({r['strategy']}, {r['checkpoint']}.pt step {r['step']}, "
                      f"{r['weights']} weights; {r['trunk_parameters']:,} trunk parameters)", ""]
        lines += ["| component | loss | trunk ‖g‖ | share | weight | weighted share | progress | head ‖g‖ |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in COMPONENTS:
            t = r["tasks"][c]
            cells = [_fmt(t.get(k), 4 if k in ("norm", "head_norm", "loss") else 3)
                     for k in ("loss", "norm", "share", "weight", "weighted_share", "progress", "head_norm")]
            lines.append(f"| {DISPLAY_NAMES[c]} | " + " | ".join(cells) + " |")
        if r.get("weights_note"):
            lines += ["", r["weights_note"] + "."]
        head = "| cos (fraction < 0) | " + " | ".join(DISPLAY_NAMES[c] for c in COMPONENTS) + " |"
        lines += ["", head, "|---" * (len(COMPONENTS) + 1) + "|"]
        for i, a in enumerate(COMPONENTS):
            cells = []
            for j, b in enumerate(COMPONENTS):
                p = r["cosine"][f"{a}|{b}"]
                cells.append("1" if i == j else f"{_fmt(p, 2)} ({p['negative_fraction']:.2f})"
                             if p["negative_fraction"] is not None else "–")
            lines.append(f"| {DISPLAY_NAMES[a]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--run", nargs="+", required=True, help="run directories")
    p.add_argument("--checkpoint", default="last", choices=("best", "last"))
    p.add_argument("--weights", default="model", choices=("model", "ema"),
                   help="the training weights (what an optimizer step differentiates) or the EMA")
    p.add_argument("--split", default="train", choices=("train", "val", "test"))
    p.add_argument("--batches", type=number(int, ge=1, le=10_000), default=8)
    p.add_argument("--batch-size", type=number(int, ge=1, le=65_536), help="default: the run's training.batch_size")
    p.add_argument("--seed", type=number(int, ge=0, le=2**32 - 2), default=0)
    p.add_argument("--threads", type=number(int, ge=1, le=1024), default=1)
    add_output_args(p, "task_gradients")
    args = p.parse_args(argv)
    return run_main(lambda: run(args, argv), debug=args.debug)


def run(args, argv: list[str] | None) -> int:
    torch.set_num_threads(args.threads)
    runs = []
    for run_dir in args.run:
        r = measure_run(run_dir, which=args.checkpoint, weights=args.weights, split=args.split,
                        batches=args.batches, batch_size=args.batch_size, seed=args.seed)
        print(f"{run_dir}: {r['seconds']} s", flush=True)
        runs.append(r)
    command = "python bench/task_gradients.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"command": command, "machine": machine(), "threads": args.threads,
              "date": datetime.date.today().isoformat(), "batches": args.batches, "runs": runs}
    table = render(result)
    print(table)
    write_outputs(args, DOC_KEY, result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
