"""`tailor eval --markdown FILE`: the report as Markdown, with everything needed to reproduce
it (the command, the hashes of data, base and adapter, settings, seed, versions)."""
from __future__ import annotations

import shlex
import time

from ..results import EvalReport


def _cell(text) -> str:
    """A table cell: one line, pipes escaped, long answers cut."""
    s = "" if text is None else str(text)
    s = s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ⏎ ")
    return s if len(s) <= 200 else s[:197] + "..."


def _fmt(v, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def reproduce_command(r: EvalReport) -> str:
    s = r.settings
    args = ["tailor", "eval", "--adapter", r.adapter]
    if r.data.get("split") != "validation":
        args += ["--data", str(r.data.get("path", ""))]
    args += ["--limit", str(s.get("limit", 0)), "--seed", str(s.get("seed", 0)),
             "--max-tokens", str(s.get("max_tokens", 0)),
             "--batch-size", str(s.get("batch_size", 1))]
    if r.probe is None:
        args.append("--no-probe")
    if r.parity is not None:
        args.append("--parity")
    return " ".join(shlex.quote(a) for a in args)


def report_markdown(r: EvalReport) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(r.created or time.time()))
    b, t = r.base, r.tuned
    out = [f"# Evaluation of adapter `{r.adapter}`", "", f"{r.verdict}.", "",
           *[f"> Note: {n}\n" for n in r.notes],
           f"Made {when}; report `{r.id}`, kept in the adapter's record at `{r.path}`.", "",
           "## Reproduce", "", "```sh", reproduce_command(r), "```", "",
           "| what | value |", "| --- | --- |",
           f"| data | `{_cell(r.data.get('path'))}` ({r.data.get('split')}, "
           f"{r.data.get('evaluated')} of {r.data.get('examples')} examples) |",
           f"| data sha256 | `{r.data.get('sha256', '')}` |",
           f"| base model | `{_cell(r.base_model.get('path'))}` |",
           f"| base model sha256 | `{r.base_model.get('sha256', '')}` |",
           f"| adapter sha256 | `{r.adapter_sha256}` |",
           f"| settings | {_cell(', '.join(f'{k} {v}' for k, v in r.settings.items()))} |",
           f"| versions | {_cell(', '.join(f'{k} {v}' for k, v in r.versions.items()))} |",
           "", "## Scores", "", "| | base | with the adapter |", "| --- | --- | --- |",
           f"| loss (nats per trained token) | {_fmt(b.loss)} | {_fmt(t.loss)} |",
           f"| perplexity | {_fmt(b.perplexity, '.4g')} | {_fmt(t.perplexity, '.4g')} |",
           f"| exact match | {_fmt(b.exact_match, '.0%')} | {_fmt(t.exact_match, '.0%')} |",
           f"| token F1 | {_fmt(b.f1, '.2f')} | {_fmt(t.f1, '.2f')} |",
           f"| ROUGE-L | {_fmt(b.rouge_l, '.2f')} | {_fmt(t.rouge_l, '.2f')} |",
           f"| answer length (words) | {_fmt(b.answer_words, '.1f')} | "
           f"{_fmt(t.answer_words, '.1f')} |", ""]
    out += _examples_table(r)
    for title, extra in (("Forgetting probe", r.probe), ("Shipped-file parity", r.parity)):
        if extra is not None:
            out += ["", f"## {title}", "", "```", extra.format_text(), "```"]
    return "\n".join(out) + "\n"


def _examples_table(r: EvalReport) -> list[str]:
    out = [f"## Examples ({r.worse} worse, {r.better} better; worse first)", "",
           "| example | prompt | reference | base | adapter | loss base → adapter |",
           "| --- | --- | --- | --- | --- | --- |"]
    for e in r.examples:
        mark = "**worse** " if e.worse else ""
        out.append(f"| {mark}{_cell(e.source)} | {_cell(e.prompt)} | {_cell(e.reference)} | "
                   f"{_cell(e.base_answer)} | {_cell(e.adapter_answer)} | "
                   f"{_fmt(e.base_loss)} → {_fmt(e.adapter_loss)} |")
    return out
