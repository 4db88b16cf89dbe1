"""Draws the seed tables of bench/seed_write.sh and bench/seed_read.sh as
PNG (matplotlib, which scripts/test.sh installs into the bench venv).

    plot_seed.py write RESULTS.jsonl OUT.png
    plot_seed.py read RESULTS.json OUT.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

kind, source, out = sys.argv[1:4]

if kind == "write":
    rows = [json.loads(line) for line in open(source)]
    targets = list(dict.fromkeys(row["target"] for row in rows))
    steps = list(dict.fromkeys(row["step"] for row in rows))
    labels = [f"{step / 1e6:g} M" if step else "unpaced" for step in steps]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    panels = [("rows_per_min", "rows/min sustained", 1e-6, "M rows/min"),
              ("readable_p99_ms", "ack → readable p99", 1e-3, "seconds"),
              ("peak_mib", "server peak memory", 1, "MiB")]
    for ax, (key, title, scale, unit) in zip(axes, panels):
        for target in targets:
            by_step = {row["step"]: row[key] for row in rows if row["target"] == target}
            ax.plot(labels, [by_step.get(step, float("nan")) * scale for step in steps], marker="o", label=target)
        ax.set_title(title)
        ax.set_xlabel("the seed's step (rows/min asked)")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    asked = {row["step"]: row.get("asked_per_min") for row in rows}
    axes[0].plot(labels[:-1], [(asked[step] or float("nan")) / 1e6 for step in steps[:-1]], "k--", linewidth=1,
                 label="asked")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
    fig.suptitle("The seed's write table on 2 cores (bench/seed_write.sh)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
else:
    results = json.load(open(source))
    queries = list(results)
    engines = [e for e in ["logpipe API", "DuckDB", "Spark SQL", "PostgreSQL", "PostgreSQL + indexes"]
               if any(e in results[q] for q in queries)]
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(engines)
    for i, engine in enumerate(engines):
        ax.bar([q + i * width for q in range(len(queries))],
               [results[name].get(engine, float("nan")) for name in queries], width, label=engine)
    ax.set_xticks([q + width * (len(engines) - 1) / 2 for q in range(len(queries))], queries)
    ax.set_yscale("log")
    ax.set_ylabel("median ms (log scale)")
    ax.set_title("The seed's read table on 2 cores (bench/seed_read.sh)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
fig.savefig(out, dpi=90)
print(f"plot: {out}")
