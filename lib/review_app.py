"""Review decisions from inside JupyterLab: every flagged duplicate pair and every sub-population group of a
run, one at a time, with confirm / reject / skip (notebooks/review_decisions.ipynb is the thin front end).

Two layers, so the logic is testable without a browser:

- `ReviewSession`: the items (runs/<name>/duplicates.csv via RunFolder.read_duplicates, then groups.csv via
  read_groups), the decisions already in the review files, the current position, and `decide`, which writes
  the review file *atomically after every decision* (a temporary file in the same folder, fsync, os.replace):
  a crash or a kernel restart loses nothing, and a new session resumes at the first undecided item.
- `ReviewApp`: ipywidgets around a session. The buttons call its methods (`confirm`, `reject`, `skip`, `back`,
  `clear`); each has a one-key shortcut typed into the key box (an ipywidgets Text with continuous updates:
  click into it once, then every key you type is one action; this needs no JupyterLab extension).

Review files are what lib/review.py reads: params/review/<name>/duplicates.csv (keys train_idx, test_idx) and
groups.csv (key group_id), the run's table with a `decision` column (confirm | reject | empty = the automatic
verdict stands). Decisions in a review file for items the run no longer has are kept, never dropped. The next
`make all PARAMS=<name>` merges the decisions (review.merge: column `final`) in notebooks 03 and 04, and the
buckets follow.
"""
from __future__ import annotations

import html
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import review
from .params import ROOT
from .run_folder import MissingArtifact, RunFolder

KEYS = {"duplicates": ["train_idx", "test_idx"], "groups": ["group_id"]}
DECISIONS = ("confirm", "reject")
DROP = ("decision", "decided_by", "final")  # the run's review columns: the review file has its own `decision`
PAIR_PX = 160    # each image of a duplicate pair (>= 128 px)
GROUP_PX = 96    # each image of a group (>= 64 px)


@dataclass(frozen=True)
class Item:
    artifact: str        # duplicates | groups
    key: tuple           # (train_idx, test_idx) | (group_id,)
    row: dict            # the run table's row (automatic verdict, score, ...)


def _write_atomic(table: pd.DataFrame, path: Path) -> Path:
    """`table` as CSV at `path`: written to a temporary file beside it, flushed to disk, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            table.to_csv(f, index=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _rel(path: Path) -> str:
    """A path as the report and the UI show it: relative to the checkout when inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


class ReviewSession:
    """The items of one run and a reviewer's decisions on them (see the module doc)."""

    def __init__(self, name: str, run: RunFolder, *, review_files: dict[str, Path] | None = None):
        self.name = name
        self.run = run
        self.files = {a: Path(p) for a, p in (review_files or {
            a: review.review_path(params_name=name, artifact=a) for a in KEYS}).items()}
        self.tables: dict[str, pd.DataFrame] = {}
        self.missing: list[str] = []  # what the run does not have yet: "<file>: run notebook NN first"
        for artifact, read in (("duplicates", run.read_duplicates), ("groups", run.read_groups)):
            try:
                table = read()
            except MissingArtifact:
                self.missing.append(f"{RunFolder.filename(artifact)} (run notebook "
                                    f"{'03' if artifact == 'duplicates' else '04'} for '{name}' first)")
                table = pd.DataFrame(columns=KEYS[artifact] + ["verdict"])
            self.tables[artifact] = table.drop(columns=[c for c in DROP if c in table.columns]).reset_index(drop=True)
        self.items = self._items()
        self.decisions: dict[tuple[str, tuple], str] = {}
        for artifact in KEYS:
            self.decisions.update(self._read(artifact))
        first = self.first_undecided()
        self.pos = len(self.items) if first is None else first

    @classmethod
    def for_params(cls, params_name: str) -> "ReviewSession":
        from . import params

        return cls(params_name, RunFolder.of(params.load(params_name)))

    # ------------------------------------------------------------------ items and decisions
    def _items(self) -> list[Item]:
        out = []
        dups = self.tables["duplicates"]
        if len(dups):
            # memorized points first (their decisions move the buckets), otherwise the run's order
            order = np.argsort(~dups["memorized"].to_numpy(bool), kind="stable") if "memorized" in dups else range(len(dups))
            for i in order:
                row = dups.iloc[int(i)].to_dict()
                out.append(Item("duplicates", (int(row["train_idx"]), int(row["test_idx"])), row))
        for row in self.tables["groups"].to_dict("records"):
            out.append(Item("groups", (int(row["group_id"]),), row))
        return out

    def _read(self, artifact: str) -> dict[tuple[str, tuple], str]:
        path = self.files[artifact]
        if not path.is_file():
            return {}
        table = review.read_decisions(path, keys=KEYS[artifact])
        return {(artifact, tuple(int(v) for v in key)): d
                for *key, d in table[[*KEYS[artifact], "decision"]].itertuples(index=False, name=None) if d}

    def decision(self, i: int | None = None) -> str:
        """confirm | reject | "" (undecided) of item i (default: the current one)."""
        item = self.items[self.pos if i is None else i]
        return self.decisions.get((item.artifact, item.key), "")

    def first_undecided(self, start: int = 0) -> int | None:
        for i in range(start, len(self.items)):
            if not self.decision(i):
                return i
        return None

    @property
    def current(self) -> Item | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    @property
    def done(self) -> bool:
        return self.pos >= len(self.items)

    def counts(self) -> dict[str, int]:
        decided = [self.decision(i) for i in range(len(self.items))]
        return {"items": len(self.items), "decided": sum(bool(d) for d in decided),
                "confirm": decided.count("confirm"), "reject": decided.count("reject")}

    # ------------------------------------------------------------------ actions
    def decide(self, decision: str) -> Path | None:
        """confirm | reject | clear (back to the automatic verdict) the current item and write its review file;
        skip writes nothing. Then move on to the next undecided item (skipped ones come back at the end)."""
        if decision not in (*DECISIONS, "clear", "skip"):
            raise ValueError(f"decision must be confirm, reject, clear or skip, got {decision!r}")
        item = self.current
        if item is None:
            return None
        written = None
        if decision != "skip":
            written = self._write(item, "" if decision == "clear" else decision)
        self._advance()
        return written

    def back(self) -> None:
        self.pos = max(0, min(self.pos, len(self.items)) - 1)

    def go(self, i: int) -> None:
        self.pos = int(np.clip(i, 0, len(self.items)))

    def _advance(self) -> None:
        """To the next undecided item after this one, else the first undecided before it, else the end."""
        nxt = self.first_undecided(self.pos + 1)
        if nxt is None:
            nxt = self.first_undecided(0)
            if nxt is not None and nxt >= self.pos:  # only this (skipped) item is left
                nxt = None
        self.pos = len(self.items) if nxt is None else nxt

    def _write(self, item: Item, decision: str) -> Path:
        """Re-read the review file (a hand edit or another session since is kept), set this item, write atomically."""
        artifact, keys = item.artifact, KEYS[item.artifact]
        on_disk = self._read(artifact)
        on_disk[(artifact, item.key)] = decision
        table = self.tables[artifact].copy()
        key_of = [tuple(int(v) for v in k) for k in table[keys].itertuples(index=False, name=None)]
        table.insert(len(keys), "decision", [on_disk.get((artifact, k), "") for k in key_of])
        known = set(key_of)
        foreign = [(k, d) for (a, k), d in on_disk.items() if a == artifact and k not in known and d]
        if foreign:  # decisions on items this run does not list: kept as they were
            extra = pd.DataFrame([dict(zip(keys, k), decision=d) for k, d in foreign])
            table = pd.concat([table, extra], ignore_index=True)
        path = _write_atomic(table, self.files[artifact])
        self.decisions = {k: v for k, v in self.decisions.items() if k[0] != artifact}
        self.decisions.update({k: v for k, v in on_disk.items() if v})
        return path


# ---------------------------------------------------------------------------------------------------- widgets
def _png(img: np.ndarray, px: int) -> bytes:
    """One image (H, W, 3 uint8) upscaled by nearest neighbour to `px` wide, as PNG bytes."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    scale = max(1, round(px / im.width))
    buf = io.BytesIO()
    im.resize((im.width * scale, im.height * scale), Image.NEAREST).save(buf, format="png")
    return buf.getvalue()


class ReviewApp:
    """ipywidgets front end of a ReviewSession: the item, its automatic verdict, and the decision buttons."""

    ACTIONS = {"c": "confirm", "r": "reject", "s": "skip", "b": "back", "x": "clear"}

    def __init__(self, session: ReviewSession, *, x_train: np.ndarray | None, x_test: np.ndarray | None,
                 class_names: list[str] | None = None, mem: np.ndarray | None = None,
                 pages: pd.DataFrame | None = None):
        import ipywidgets as w

        self.session = session
        self.x_train, self.x_test, self.class_names, self.mem = x_train, x_test, class_names, mem
        self.pages = pages
        self.buttons = {
            "confirm": w.Button(description="confirm (c)", button_style="success", tooltip="the item is what it is "
                                "flagged as: it counts downstream"),
            "reject": w.Button(description="reject (r)", button_style="danger", tooltip="it is not: it does not count"),
            "skip": w.Button(description="skip (s)", tooltip="decide later; the automatic verdict stands meanwhile"),
            "back": w.Button(description="back (b)", tooltip="the previous item (to change a decision)"),
            "clear": w.Button(description="auto (x)", tooltip="remove my decision: the automatic verdict stands"),
        }
        for name, button in self.buttons.items():
            button.on_click(lambda _b, name=name: self.act(name))
        self.keys = w.Text(value="", placeholder="click here, then type c r s b x", continuous_update=True,
                           description="keys:", layout=w.Layout(width="260px"))
        self.keys.observe(self.on_key, names="value")
        self.progress = w.IntProgress(min=0, max=max(1, len(session.items)), description="decided")
        self.status = w.HTML()
        self.header = w.HTML()
        self.view = w.Box(layout=w.Layout(display="flex", flex_flow="row wrap"))
        help_text = ("<b>Keys</b>: click into the key box once, then type <b>c</b> confirm, <b>r</b> reject, "
                     "<b>s</b> skip, <b>b</b> back, <b>x</b> auto (remove my decision). Every decision is saved at "
                     f"once to <code>{_rel(session.files['duplicates'])}</code> / "
                     f"<code>{_rel(session.files['groups'])}</code>; it counts the next time notebooks 03 and 04 run "
                     f"(<code>make all PARAMS={session.name}</code>).")
        # the buttons and the key box above the item, so they stay in the same place whatever its size
        self.widget = w.VBox([w.HTML(help_text), w.HBox([self.progress, self.status]),
                              w.HBox([*self.buttons.values(), self.keys]), self.header, self.view])
        self.render()

    @classmethod
    def open(cls, params_name: str) -> "ReviewApp":
        """The app for runs/<params_name>/ with the run's images (the dataset is loaded as the notebooks load it)."""
        from . import data, params

        P = params.load(params_name)
        session = ReviewSession(params_name, RunFolder.of(P))
        if len(session.missing) == len(KEYS):
            raise MissingArtifact(f"nothing to review in runs/{params_name}/: no {' and no '.join(session.missing)}")
        ds = data.load(P)
        run = RunFolder.of(P)
        mem = run.read_scores().mem if run.exists("scores") else None
        manifest = P.fig_dir / "review_pages.csv"
        pages = pd.read_csv(manifest) if manifest.is_file() else None
        return cls(session, x_train=ds.x_train, x_test=ds.x_test, class_names=list(ds.class_names), mem=mem,
                   pages=pages)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ callbacks (what the buttons and keys call)
    def act(self, action: str) -> None:
        try:
            if action == "back":
                self.session.back()
            else:
                self.session.decide(action)
            self.render()
        except review.ReviewError as e:  # a malformed review file: say so, change nothing
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
        except OSError as e:  # the file could not be written (the previous one stays as it was)
            self.status.value = (f"<span style='color:#b00'>not saved ({html.escape(str(e))}): the review file is "
                                 "as it was; try again</span>")

    def confirm(self, *_):
        self.act("confirm")

    def reject(self, *_):
        self.act("reject")

    def skip(self, *_):
        self.act("skip")

    def back(self, *_):
        self.act("back")

    def clear(self, *_):
        self.act("clear")

    def on_key(self, change) -> None:
        """The key box: each character typed is one action (ACTIONS); the box is emptied after it."""
        new, old = change["new"], change["old"]
        if not new:
            return
        key = new[-1].lower() if len(new) > len(old) else ""
        self.keys.value = ""
        if key in self.ACTIONS:
            self.act(self.ACTIONS[key])

    # ------------------------------------------------------------------ drawing
    def _name(self, y) -> str:
        try:
            return self.class_names[int(y)] if self.class_names is not None and int(y) >= 0 else "?"
        except (IndexError, ValueError, TypeError):
            return "?"

    def _cell(self, x, i: int, px: int, caption: str):
        import ipywidgets as w

        parts = []
        if x is not None and 0 <= i < len(x):
            parts.append(w.Image(value=_png(x[i], px), format="png", width=px, height=px))
        else:
            parts.append(w.HTML(f"<div style='width:{px}px;height:{px}px;background:#eee'>no image</div>"))
        parts.append(w.HTML(f"<div style='width:{max(px, 96)}px;font-size:12px;line-height:1.3'>{caption}</div>"))
        return w.VBox(parts, layout=w.Layout(margin="0 10px 10px 0"))

    def _page_of(self, item: Item) -> str:
        if self.pages is None or not len(self.pages):
            return ""
        p = self.pages
        if item.artifact == "groups":
            on = p[(p["item"] == "group") & (p["group_id"] == item.key[0])]
        else:
            on = p[(p["train_idx"] == item.key[0]) & (p["test_idx"] == item.key[1])]
        return ", ".join(sorted(set(on["page"].astype(str))))

    def render(self) -> None:
        s = self.session
        c = s.counts()
        self.progress.max = max(1, c["items"])
        self.progress.value = c["decided"]
        self.status.value = (f"{c['decided']} of {c['items']} decided ({c['confirm']} confirm, {c['reject']} reject)")
        item = s.current
        missing = "".join(f"<p>Not in this run yet: {html.escape(m)}.</p>" for m in s.missing)
        if item is None:
            left = c["items"] - c["decided"]
            self.header.value = ("<h3>Nothing to review.</h3>" if not c["items"] else
                                 "<h3>Done: every item has a decision.</h3>" if not left else
                                 f"<h3>End of the list: {left} item(s) skipped (press b to go back).</h3>") + missing
            self.view.children = ()
            return
        r = item.row
        mine = s.decision()
        yours = (f"<b>your decision: {mine}</b>" if mine else "no decision yet (the automatic verdict stands)")
        page = self._page_of(item)
        where = f" · sheet {page}" if page else ""
        if item.artifact == "duplicates":
            a, b = item.key
            score = r.get("score")
            score = "-" if score is None or pd.isna(score) else f"{float(score):.3f}"
            j = r.get("judgment")
            judgment = {0: "exact", 1: "near-duplicate", 2: "very similar"}.get(
                -1 if j is None or pd.isna(j) else int(j), "not listed")
            labels = f"{self._name(r.get('train_label'))} / {self._name(r.get('test_label'))}"
            self.header.value = (
                f"<h3>Duplicate pair {s.pos + 1} of {c['items']}: train {a} · test {b}</h3>"
                f"<p>automatic verdict <b>{r.get('verdict')}</b> · kind {r.get('kind')} · score {score} · "
                f"source {r.get('source')} · ciFAIR {judgment} · finder {r.get('finder_kind')} · "
                f"memorized {bool(r.get('memorized'))} · labels {labels}{where}</p><p>{yours}</p>{missing}")
            mem = f" · mem {self.mem[a]:.2f}" if self.mem is not None and 0 <= a < len(self.mem) else ""
            self.view.children = (self._cell(self.x_train, a, PAIR_PX, f"train {a}<br>{self._name(r.get('train_label'))}{mem}"),
                                  self._cell(self.x_test, b, PAIR_PX, f"TEST {b}<br>{self._name(r.get('test_label'))}"))
        else:
            from .subpop import parse_idx

            (gid,) = item.key
            tr, te = parse_idx(r.get("train_idx")), parse_idx(r.get("test_idx"))
            name = r.get("class_name") or self._name(r.get("class"))
            self.header.value = (
                f"<h3>Sub-population group {gid} ({s.pos + 1} of {c['items']}): {name}, {len(tr)} train → "
                f"{len(te)} test</h3><p>automatic verdict <b>{r.get('verdict')}</b> · influence "
                f"{float(r.get('infl_min', np.nan)):.2f}–{float(r.get('infl_max', np.nan)):.2f} · "
                f"{r.get('n_pairs')} high-influence pairs · size {float(r.get('size_rel_class', np.nan)):.3f} of its "
                f"class{where}</p><p>{yours}</p>")
            cells = []
            for i in tr:
                mem = f" · mem {self.mem[i]:.2f}" if self.mem is not None and 0 <= i < len(self.mem) else ""
                cells.append(self._cell(self.x_train, int(i), GROUP_PX, f"train {i}{mem}"))
            cells += [self._cell(self.x_test, int(j), GROUP_PX, f"<b>TEST {j}</b>") for j in te]
            self.view.children = tuple(cells)
