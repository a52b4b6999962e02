"""The person's view of ``charrnn clip-stats``: a report drawn with rich.

Everything shown comes from the JSON document built by :mod:`charrnn.clipstats`
(so the two views cannot disagree), plus the per-step series for the chart.
Imported lazily by the command only. Colour is a hint, never the only carrier of
meaning: the threshold line, the markers under the chart and the words say it all
in plain text too (NO_COLOR, TERM=dumb, or stdout not a terminal).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from rich.console import Console
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from charrnn.clipstats import Series, columns, norm_dist
from charrnn.console import rich_console

BLOCKS = "▁▂▃▄▅▆▇█"  # eighths of a cell, bottom up
LABEL_W = 9  # y-axis label width
MAX_EVENTS = 20  # spike rows shown; --json has them all
LOG_RATIO = 20.0  # log scale when the tallest column is this many times the median


def num(x: float | None) -> str:
    """A norm or threshold, short: 0.408, 1.17, 4.97e+04, none."""
    if x is None:
        return "none"
    if x == 0:
        return "0"
    return f"{x:.3g}"


def pct(x: float | None) -> str:
    """A fraction as a percentage that keeps small values visible: 0%, 0.0012%, 12.5%."""
    if x is None:
        return "-"
    if x == 0:
        return "0%"
    if x < 0.001:
        return f"{100 * x:.2g}%"
    return f"{x:.1%}"


def units(word: str) -> str:
    """step -> steps, batch -> batches."""
    return word + ("es" if word.endswith("ch") else "s")


def plural(n: int, word: str) -> str:
    return f"{n} {word if n == 1 else units(word)}"


def scale(x: float | None) -> str:
    """A clipping scale factor: 1.000, 0.311, 4.51e-11."""
    if x is None:
        return "-"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.3g}"


def para(text: str, style: str = "", indent: int = 2) -> Padding:
    """A paragraph that wraps under its own indent."""
    return Padding(Text(text, style=style), (0, 0, 0, indent), expand=False)


# --------------------------------------------------------------------------- the chart


def chart(
    series: Series,
    threshold: float | None,
    threshold_name: str,
    width: int,
    spikes: list[int],
    height: int = 8,
    color: bool = True,
) -> list[Text | Padding]:
    """Pre-clip norm over steps: max per column, the threshold as a dotted row,
    columns above it in red, spikes (▲) and non-finite steps (×) marked below.
    The drawing is Text rows (never wrapped); the legend, paragraphs that wrap."""
    cols = max(10, min(100, width - LABEL_W - 2))
    b = columns(series, cols)
    vals = b["max"]  # (C,) largest finite norm per column
    n = vals.shape[0]
    fin = np.isfinite(vals)
    if not fin.any():
        return [Text("  no finite gradient norm to draw", style="red")]  # unreachable: checked
    top = float(vals[fin].max())
    positive = vals[fin & (vals > 0)]
    med = norm_dist(series).percentile([50])[0]
    log = positive.size > 0 and med > 0 and top > LOG_RATIO * med
    hi = top
    thr_note = ""
    if threshold is not None:
        if threshold <= 2 * top or (log and threshold <= top * 10):
            hi = max(top, threshold)
        else:
            thr_note = " (above the chart: no column reaches it)"
    if log:
        lo = float(positive.min()) / 1.5

        def level(v: float) -> float:
            return (math.log(max(v, lo)) - math.log(lo)) / (math.log(hi) - math.log(lo)) * height
    else:
        lo = 0.0

        def level(v: float) -> float:
            return v / hi * height if hi > 0 else 0.0

    levels = [max(level(v), 1 / 8) if np.isfinite(v) else 0.0 for v in vals]
    w = max(1, min(4, cols // n))  # characters per column: short series get wider bars
    thr_row = None
    if threshold is not None and not thr_note:
        thr_row = height - 1 - min(int(level(threshold)), height - 1)
    over = [threshold is not None and np.isfinite(v) and v > threshold for v in vals]

    def label(r: int) -> str:
        if r == 0:
            return num(hi)
        if r == thr_row:
            return num(threshold)
        if r == height - 1:
            return num(lo) if log else "0"
        return ""

    lines: list[Text | Padding] = []
    for r in range(height):
        t = Text(f"{label(r):>{LABEL_W - 1}} ┤" if label(r) else " " * LABEL_W + "│")
        base = height - 1 - r  # this row covers levels [base, base + 1)
        for c in range(n):
            fill = min(max(levels[c] - base, 0.0), 1.0)
            eighths = int(round(fill * 8))
            if eighths:
                t.append(BLOCKS[eighths - 1] * w, style="red" if over[c] else "cyan")
            elif r == height - 1 and not fin[c]:
                t.append("×" * w, style="bold red")
            elif r == thr_row:
                t.append("┈" * w, style="yellow")
            else:
                t.append(" " * w)
        lines.append(t)
    lines.append(Text(" " * LABEL_W + "└" + "─" * (n * w)))
    marks = _marks(b, spikes, w)
    if marks is not None:
        lines.append(marks)
    unit = "batch" if threshold_name.startswith("probe") else "step"
    left = f"{unit} {b['first'][0]}"
    last = str(b["last"][-1])
    axis = left if series.count == 1 else left + last.rjust(max(n * w - len(left), len(last) + 1))
    lines.append(Text(" " * (LABEL_W + 1) + axis))
    legend = _legend(series.count / n, unit, log, threshold, threshold_name, thr_note, color)
    if marks is not None:
        legend.append(f"▲ spike, × non-finite {unit} (update skipped)")
    lines += [para(item, "dim", LABEL_W + 1) for item in legend]
    return lines


def _marks(b: dict[str, np.ndarray], spikes: list[int], w: int) -> Text | None:
    """The row under the chart: ▲ under a column with a spike, × under one with a
    non-finite step; None when no column has either."""
    spike_set = np.asarray(sorted(spikes), dtype=np.int64)
    marks = Text(" " * (LABEL_W + 1))
    any_mark = False
    for c in range(b["max"].shape[0]):
        lo_s, hi_s = int(b["first"][c]), int(b["last"][c])
        has_spike = spike_set.size and np.any((spike_set >= lo_s) & (spike_set <= hi_s))
        if b["nonfinite"][c]:
            marks.append("×", style="bold red")
            any_mark = True
        elif has_spike:
            marks.append("▲", style="bold red")
            any_mark = True
        else:
            marks.append(" ")
        marks.append(" " * (w - 1))
    return marks if any_mark else None


def _legend(
    per: float,
    unit: str,
    log: bool,
    threshold: float | None,
    threshold_name: str,
    thr_note: str,
    color: bool,
) -> list[str]:
    """What a column holds, the scale, and what the dotted threshold row means."""
    legend = [
        f"the largest pre-clip norm in each column ({'1' if per <= 1 else f'~{per:.2g}'} "
        f"{unit if per <= 1 else units(unit)} per column)",
        "log scale: the spikes dwarf the rest" if log else "linear scale from 0",
    ]
    if threshold is not None:
        legend.append(
            f"┈ {threshold_name.removeprefix('probe ')} {num(threshold)}"
            + (thr_note or ("; red columns go above it" if color else "; columns above it clipped"))
        )
    return legend


# --------------------------------------------------------------------------- the report


def _header(doc: dict) -> list[Text]:
    c = doc["config"]
    title = Text("charrnn clip-stats", style="bold")
    title.append(f"  run {doc['run'] or '?'}, step {doc['step']}", style="bold")
    out = [title, Text(f"checkpoint {doc['checkpoint']}", style="dim")]
    model = f"{c['cell']} {c['layers']}x{c['hidden']}" if c.get("cell") else "model ?"
    names = c.get("mode") == "names"
    out.append(
        Text(
            f"{model}, {c['optimizer']} lr {num(c['lr'])}, "
            f"--clip-norm {num(c['clip_norm'])}, --clip-value {num(c['clip_value'])}, "
            + (
                f"batches of {c['batch_size']} lines"  # names mode: no --seq-len
                if names
                else f"batches of {c['batch_size']}x{c['seq_len']}"
            )
        )
    )
    p = doc["probe"]
    st = doc["steps"]
    if p is None:
        out.append(
            Text(
                f"recorded history: steps {st['first']}..{st['last']} "
                f"({st['count']} steps, {st['nonfinite']} non-finite)"
            )
        )
        hs = doc.get("history") or {}
        if hs.get("steps_summarized"):
            out.append(
                Text(
                    f"the last {hs['steps_in_full']} steps are kept one by one; the "
                    f"{hs['steps_summarized']} before step {hs['exact_from_step']} are "
                    "summarized: percentiles are approximate (within ~1.2%); counts, max, "
                    "clipping and every spike are exact",
                    style="dim",
                )
            )
    else:
        corpus = ", ".join("standard input" if c == "-" else c for c in p["corpus"])
        if p["batching"] == "lines":  # names mode: what the run's training batches are
            shape = (
                f"{plural(p['batch_size'], 'line')} as names-mode training reads them, "
                "each line from the start state"
            )
        else:
            shape = f"{p['batch_size']}x{p['seq_len']}"
        out.append(
            Text(
                f"probe of {corpus}: {plural(p['batches'], 'batch')} of {shape}; "
                "gradients only, nothing updated"
            )
        )
        if p["loss_mean"] is not None:
            out.append(
                Text(
                    f"mean loss on them {p['loss_mean']:.3f} nats/char "
                    f"({p['loss_mean'] / math.log(2):.3f} bits)"
                )
            )
    return out


def _alarm(doc: dict, unit: str) -> Panel | None:
    ev = doc["events"]
    if not ev["exploding"]:
        return None
    parts = []
    if ev["spike_count"]:
        steps = [s["step"] for s in ev["spikes"]]
        shown = ", ".join(map(str, steps[:MAX_EVENTS]))
        more = f", ... ({len(steps) - MAX_EVENTS} more)" if len(steps) > MAX_EVENTS else ""
        ratios = [s["ratio"] for s in ev["spikes"]]
        big = math.inf if None in ratios else max(ratios)  # None: a spike over a zero median
        parts.append(
            f"{plural(ev['spike_count'], 'spike')}: the norm jumped above "
            f"{ev['factor']:g}x the median of the previous {ev['window']} {units(unit)} "
            f"(up to {big:.3g}x) at {unit} {shown}{more}"
        )
        cn = doc["config"]["clip_norm"]
        caught = [s for s in ev["spikes"] if s["scale"] < 1]
        if cn is None:
            went = "would go" if unit == "batch" else "went"
            parts.append(
                f"no norm clipping was on: these updates {went} through at full size "
                "(train with --clip-norm)"
            )
        elif caught:
            parts.append(
                f"--clip-norm {num(cn)} caught {len(caught)} of them, scaling the "
                f"gradient by as little as {min(s['scale'] for s in caught):.3g}"
            )
    if ev["nonfinite_steps"]:
        steps = ev["nonfinite_steps"]
        shown = ", ".join(map(str, steps[:MAX_EVENTS]))
        more = f", ... ({len(steps) - MAX_EVENTS} more)" if len(steps) > MAX_EVENTS else ""
        verb = "skipped: the update was not applied" if unit == "step" else "no gradient"
        parts.append(
            f"{plural(len(steps), 'non-finite ' + unit)} (nan/inf, {verb}): {unit} {shown}{more}"
        )
    body = Text("\n".join(parts))
    return Panel(
        body, title="EXPLODING GRADIENTS", title_align="left", border_style="bold red", style="red"
    )


def _clipping(doc: dict, unit: str) -> list[Any]:
    cl = doc["clipping"]
    n = doc["steps"]["finite"]
    out: list[Any] = []
    nc = cl["norm"]
    if nc["threshold"] is None:
        out.append(para("norm clipping: off (--clip-norm none)"))
    else:
        when = (
            f"; when it bit, the mean scale was {scale(nc['mean_scale_when_clipped'])} and "
            f"the smallest {scale(nc['min_scale'])}"
            if nc["clipped_steps"]
            else ""
        )
        out.append(
            para(
                f"norm clipping at --clip-norm {num(nc['threshold'])}: bit on "
                f"{nc['clipped_steps']} of {plural(n, unit)} "
                f"({pct(nc['fraction_clipped'])}); mean scale factor "
                f"{scale(nc['mean_scale'])}{when}"
            )
        )
    vc = cl["value"]
    if vc["threshold"] is None:
        out.append(para("value clipping: off (--clip-value none)"))
    else:
        out.append(
            para(
                f"value clipping at --clip-value {num(vc['threshold'])}: clamped "
                f"{pct(vc['fraction_entries'])} of the entries on average; on "
                f"{vc['steps_with_clamping']} of {plural(n, unit)} "
                f"({pct(vc['fraction_steps'])}) at least one entry; at most "
                f"{pct(vc['max_fraction_entries'])} of them in one {unit}"
            )
        )
    if nc["threshold"] is not None and vc["threshold"] is not None:
        out.append(
            para(
                "(norm clipping acts second, on the value-clipped gradient, so it bites "
                "less often than the pre-clip norms above suggest)",
                "dim",
            )
        )
    if doc["probe"] is not None and (nc["threshold"] or vc["threshold"]):
        out.append(para("(what the run's own clipping would do to these batches)", "dim"))
    return out


def _groups(doc: dict, unit: str) -> Table:
    gt = doc["group_threshold"]
    probe = doc["probe"]
    vt = None
    if probe is not None and probe["value_thresholds"]:
        # one value threshold as a column: the run's, else the one that clamps about 1%
        rows = probe["value_thresholds"]
        pick = next((i for i, r in enumerate(rows) if "run --clip-value" in r["labels"]), None)
        if pick is None:
            pick = next((i for i, r in enumerate(rows) if "clamps <=1%" in r["labels"]), 0)
        vt = (pick, rows[pick]["threshold"])
    where = "the run's --clip-norm" if gt["source"] == "clip_norm" else "the suggested threshold"
    title = "Per parameter group: pre-clip L2 norm of each group"
    t = _titled_table(title)
    t.add_column("group")
    for h in ("p50", "p90", "p99", "max", f"max at {unit}", "share p50"):
        t.add_column(h, justify="right")
    if gt["value"] is not None:
        t.add_column(f"alone > {num(gt['value'])}", justify="right")
    if vt is not None:
        t.add_column(f"entries > {num(vt[1])}", justify="right")
    for r in doc["groups"]:
        cells: list[Text | str] = [
            Text(r["name"]),
            num(r["p50"]),
            num(r["p90"]),
            num(r["p99"]),
            num(r["max"]),
            str(r["max_step"]) if r["max_step"] is not None else "-",
            pct(r["share_p50"]),
        ]
        if gt["value"] is not None:
            cells.append(pct(r["fraction_over_threshold"]))
        if vt is not None:
            cells.append(pct(r["fraction_entries"][vt[0]]))
        t.add_row(*cells)
    notes = ["share p50: median share of the squared global norm"]
    if gt["value"] is not None:
        notes.append(
            f"alone > {num(gt['value'])}: {units(unit)} where this group's norm by itself "
            f"exceeded {where}"
        )
    if vt is not None:
        notes.append(
            f"entries > {num(vt[1])}: exact fraction of the group's gradient entries "
            "that value clipping there would clamp"
        )
    elif probe is None and doc["config"]["clip_value"] is not None:
        notes.append(
            "the history records value clipping for the whole gradient only; "
            "--probe CORPUS measures it per group"
        )
    t.caption = "; ".join(notes)
    t.caption_justify = "left"
    t.caption_style = "dim"
    return t


def _titled_table(title: str) -> Table:
    """A borderless table with a bold left-aligned title: the report's one table style."""
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=None,
        pad_edge=False,
        padding=(0, 1),
    )


def _threshold_table(title: str, headers: tuple[str, ...]) -> Table:
    """A probe table: the threshold, what it is ("what", left), then its figures."""
    t = _titled_table(title)
    t.add_column(headers[0], justify="right")
    t.add_column("what", justify="left")
    for h in headers[1:]:
        t.add_column(h, justify="right")
    return t


def _probe_tables(doc: dict) -> list[Any]:
    p = doc["probe"]
    nt = _threshold_table(
        "Norm clipping at other thresholds (the direction is kept: cosine 1)",
        ("clip_norm", "batches clipped", "mean scale", "cos(clipped, raw)"),
    )
    for r in p["norm_thresholds"]:
        nt.add_row(
            num(r["threshold"]),
            ", ".join(r["labels"]),
            pct(r["fraction_clipped"]),
            scale(r["mean_scale"]),
            f"{r['cosine']:.4f}",
        )
    vt = _threshold_table(
        "Value clipping at a few thresholds (entry by entry: the direction turns)",
        ("clip_value", "entries clamped", "batches affected", "cos mean", "cos min"),
    )
    for r in p["value_thresholds"]:
        vt.add_row(
            num(r["threshold"]),
            ", ".join(r["labels"]),
            pct(r["fraction_entries"]),
            pct(r["fraction_batches"]),
            "-" if r["cosine_mean"] is None else f"{r['cosine_mean']:.4f}",
            "-" if r["cosine_min"] is None else f"{r['cosine_min']:.4f}",
        )
    vt.caption = (
        "cos: cosine between the clipped and the raw gradient of each batch; norm "
        "clipping keeps it at exactly 1, value clipping lowers it as it clamps more"
    )
    vt.caption_justify = "left"
    vt.caption_style = "dim"
    return [nt, Text(""), vt]


def _events(doc: dict, unit: str) -> list[Any]:
    ev = doc["events"]
    head = Text("Exploding-gradient events", style="bold")
    rule = (
        f"a spike: a {unit} whose norm exceeds {ev['factor']:g}x the median of the "
        f"previous {ev['window']} {units(unit)}"
    )
    if not ev["exploding"]:
        return [head, para(f"none: no spike and no non-finite {unit}", "green"), para(rule, "dim")]
    out: list[Any] = [head, para(rule, "dim")]
    if ev["spikes"]:
        t = Table(box=None, pad_edge=False, padding=(0, 1))
        for h in (unit, "norm", "running median", "ratio", "largest group", "clip scale"):
            t.add_column(h, justify="left" if h == "largest group" else "right")
        for s in ev["spikes"][:MAX_EVENTS]:
            t.add_row(
                str(s["step"]),
                num(s["grad_norm"]),
                num(s["running_median"]),
                f"{s['ratio']:.3g}x" if s["ratio"] is not None else "inf",
                Text(s["top_group"] or "-"),
                scale(s["scale"]),
                style="red",
            )
        out.append(Padding(t, (0, 0, 0, 2), expand=False))
        if len(ev["spikes"]) > MAX_EVENTS:
            out.append(
                para(
                    f"... and {len(ev['spikes']) - MAX_EVENTS} more (--json lists them all)", "dim"
                )
            )
    if ev["nonfinite_steps"]:
        steps = ev["nonfinite_steps"]
        more = f" ... and {len(steps) - MAX_EVENTS} more" if len(steps) > MAX_EVENTS else ""
        out.append(
            para(
                f"non-finite {units(unit)} (nan/inf loss or gradient): "
                f"{', '.join(map(str, steps[:MAX_EVENTS]))}{more}",
                "red",
            )
        )
    return out


def _suggestion(doc: dict) -> list[Any]:
    s = doc["suggestion"]
    head = Text("Clipping advice", style="bold")
    if s["clip_norm"] is None:
        return [head, para(f"none: {s['reason']}")]
    line = Text("  ")
    if s["needed"] is False:
        line.append("not needed", style="bold green")
        line.append(f"; safety net --clip-norm {s['clip_norm']:g}")
    else:
        line.append(f"needed: --clip-norm {s['clip_norm']:g}", style="bold red")
    line.append(f"  (it would clip {pct(s['fraction_clipped'])} of these {units(doc_unit(doc))})")
    return [head, line, para(s["reason"])]


def doc_unit(doc: dict) -> str:
    return "batch" if doc["probe"] is not None else "step"


_TRAILING = re.compile(r" +((?:\x1b\[[0-9;]*m)*)$", re.MULTILINE)


def render(doc: dict, series: Series, console: Console) -> None:
    """Draw the whole report of ``doc`` (and the chart of ``series``) on ``console``."""
    if console.no_color or console.is_dumb_terminal:
        # NO_COLOR / TERM=dumb: no escape codes at all (rich's no_color keeps bold and dim)
        console = rich_console(console.file, console.width, plain=True)
    with console.capture() as cap:
        _render(doc, series, console)
    # rich pads wrapped lines to the full width; a report pasted into a README should not be
    console.file.write(_TRAILING.sub(r"\1", cap.get()))
    console.file.flush()


def _render(doc: dict, series: Series, console: Console) -> None:
    unit = doc_unit(doc)
    width = console.width
    for line in _header(doc):
        console.print(line)
    alarm = _alarm(doc, unit)
    if alarm is not None:
        console.print()
        console.print(alarm)
    console.print()
    g = doc["grad_norm"]
    head = Text("Pre-clip global gradient norm", style="bold")
    console.print(head)
    if g["p50"] is None:
        console.print(para(f"no finite {unit}", "red"))
    else:
        console.print(
            Text(
                f"  p50 {num(g['p50'])}   p90 {num(g['p90'])}   p99 {num(g['p99'])}"
                f"   max {num(g['max'])} ({unit} {g['max_step']})   "
                f"mean {num(g['mean'])}"
            )
        )
        c = doc["config"]["clip_norm"]
        net = "safety net" if doc["suggestion"]["needed"] is False else "suggested"
        thr, name = (
            (c, "--clip-norm")
            if c is not None
            else (doc["suggestion"]["clip_norm"], f"{net} --clip-norm")
        )
        if doc["probe"] is not None:
            name = "probe " + name
        spikes = [s["step"] for s in doc["events"]["spikes"]]
        color = console.color_system is not None  # NO_COLOR, TERM=dumb: no "red" to point at
        for row in chart(series, thr, name, width, spikes, color=color):
            if isinstance(row, Text):
                console.print(row, no_wrap=True, overflow="ignore", crop=False)
            else:
                console.print(row)  # the legend wraps to the width
    console.print()
    console.print(Text("How often clipping bit", style="bold"))
    for line in _clipping(doc, unit):
        console.print(line)
    console.print()
    console.print(_groups(doc, unit))
    if doc["probe"] is not None:
        console.print()
        for item in _probe_tables(doc):
            console.print(item)
    console.print()
    for item in _events(doc, unit):
        console.print(item)
    console.print()
    for line in _suggestion(doc):
        console.print(line)
