"""A/B: charrnn's own speed in two source trees, measured alternately in one session.

    python3 bench/ab.py /work/wt/baseline /work/wt/math --pairs 3

runs ``TREE/bench/bench.py --no-torch`` of each tree with ``PYTHONPATH=TREE``,
one configuration at a time, A B, B A, A B, ... (the order flips every pair so
that a drift in the machine's load does not favour one side, and a pair spans
well under a minute), keeps every JSON under --out, and prints, for
each training and sampling figure, both medians and the median of the paired
ratios B/A (a pair is one A run and the B run beside it). The load average is
printed before and after each run: compare ratios, not absolute figures, on a
shared machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click


def run_one(tree: Path, out: Path, bench_args: list[str], probe: bool, config: str) -> dict:
    """One run of TREE's bench.py (or of this directory's cpu_probe.py on TREE's charrnn)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if probe:
        env["OPENBLAS_NUM_THREADS"] = "1"
        cmd = [sys.executable, str(Path(__file__).resolve().parent / "cpu_probe.py"), config]
    else:
        cmd = [sys.executable, str(tree / "bench" / "bench.py"), "--no-torch", "-q"]
        cmd += ["--json", str(out), *bench_args, "--configs", config]
    load = os.getloadavg()[0]
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True)
    click.echo(
        f"  {tree}: {time.perf_counter() - t:.0f} s, load {load:.2f} -> {os.getloadavg()[0]:.2f}",
        err=True,
    )
    if probe:
        out.write_text(p.stdout)
        return json.loads(p.stdout)
    return figures(json.loads(out.read_text()))


def figures(res: dict) -> dict[str, float]:
    """charrnn's chars/s by figure name, e.g. 'train lstm (a)' or 'sample gru (b) B=256'."""
    out = {}
    for row in res.get("train", []):
        out[f"train {row['cell']} ({row['config']})"] = row["charrnn"]["chars_per_s"]
    for row in res.get("sample", []):
        key = f"sample {row['cell']} ({row['config']}) B={row['batch']}"
        out[key] = row["charrnn"]["chars_per_s"]
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("tree_a", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("tree_b", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--pairs", type=click.IntRange(1), default=3, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench/results/ab"),
    show_default=True,
    help="Where each run's JSON goes.",
)
@click.option("--configs", default="a,b,c", show_default=True, help="Alternated one by one.")
@click.option(
    "--probe",
    is_flag=True,
    help="Measure CPU time on one thread with bench/cpu_probe.py instead of bench.py's wall "
    "clock: for a machine too busy for wall-clock figures.",
)
@click.option(
    "--bench-args",
    default="--only train,sample --cells lstm,gru,rnn --rounds 1 --no-peak-memory",
    show_default=True,
    help="Options for both trees' bench.py.",
)
def main(
    tree_a: Path, tree_b: Path, pairs: int, out: Path, configs: str, probe: bool, bench_args: str
) -> None:
    """Alternate two trees' bench/bench.py and compare charrnn's chars/s (B/A)."""
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, float]]] = {"A": [{} for _ in range(pairs)], "B": []}
    runs["B"] = [{} for _ in range(pairs)]
    trees = {"A": tree_a.resolve(), "B": tree_b.resolve()}
    loads = [os.getloadavg()]
    flip = 0
    for i in range(pairs):
        for config in configs.split(","):
            for side in ("A", "B") if flip % 2 == 0 else ("B", "A"):
                path = out / f"{side}{i}{config}.json"
                runs[side][i].update(run_one(trees[side], path, bench_args.split(), probe, config))
            flip += 1
    loads.append(os.getloadavg())
    click.echo(f"A = {trees['A']}\nB = {trees['B']}")
    how = "cpu_probe.py (CPU time, 1 thread)" if probe else f"bench.py {bench_args}"
    click.echo(f"{pairs} pairs per config ({configs}), alternating; {how}")
    click.echo(
        "load average (1/5/15 min): start {:.2f} {:.2f} {:.2f}, end {:.2f} {:.2f} {:.2f}".format(
            *loads[0], *loads[1]
        )
    )
    click.echo(f"{'figure (charrnn chars/s)':32} {'A median':>10} {'B median':>10} {'B/A':>6}")
    for key in runs["A"][0]:
        a = [r[key] for r in runs["A"]]
        b = [r[key] for r in runs["B"]]
        ratio = statistics.median(y / x for x, y in zip(a, b, strict=True))
        click.echo(
            f"{key:32} {statistics.median(a):10.0f} {statistics.median(b):10.0f} {ratio:6.3f}"
        )


if __name__ == "__main__":
    main()
