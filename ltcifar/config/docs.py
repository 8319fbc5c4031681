"""The reference of docs/params.md and the listing of ``ltcifar methods``, rendered from the
catalogue (``catalog``) and params.yaml's structure (``params``).

A setting's type, default, range and one-line ``doc`` are written once, where it is defined; the
reference tables in docs/params.md sit between two marker comments and are this module's output
(``ltcifar docs --write`` rewrites them; a test fails when they differ), so the page cannot drift
from the code. The prose around them is written by hand. Torch-free.
"""

import re
from pathlib import Path
from typing import Any

from ltcifar.config import catalog
from ltcifar.config.catalog import REQUIRED, Method, Setting
from ltcifar.config.params import DOWNLOAD, PROFILE, PROFILE_BACKBONE
from ltcifar.config.schema import MapOf
from ltcifar.errors import PipelineError

PARAMS_MD = Path("docs/params.md")
BEGIN = "<!-- reference: generated from ltcifar/config/catalog.py by `ltcifar docs --write` -->"
END = "<!-- end of the generated reference -->"

# Each table of the reference: its heading, where its keys sit in params.yaml, its settings.
TABLES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "Recipe",
        "`recipe`, a profile's `recipe` and `budget`, a run's overrides, the candidate's "
        "top-level keys",
        catalog.RECIPE,
    ),
    ("Profiles", "`profiles.<profile>`", PROFILE),
    ("Splits", "`profiles.<profile>.splits.<split>`", catalog.SPLIT),
    ("Backbone", "`profiles.<profile>.backbone`", PROFILE_BACKBONE),
    ("Second stages", "`second_stages.<name>`", catalog.SECOND),
    ("Downloads", "`download.<dataset>`", DOWNLOAD),
    ("Evaluation", "`evaluate`", catalog.EVALUATE),
]

# Each kind of method ``ltcifar methods`` lists: its heading, the key that names it, its table.
METHOD_KINDS: list[tuple[str, str, dict[str, Method]]] = [
    ("Losses", "loss", catalog.LOSSES),
    ("Samplers", "sampler", catalog.SAMPLERS),
    ("Mixing", "mixup", catalog.MIXUPS),
    ("Models", "model", catalog.MODELS),
    ("Second stages", "second_stages.<name>.method", catalog.SECOND_STAGES),
]


def yaml_value(value: Any) -> str:
    """A default as params.yaml spells it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(yaml_value, value)) + "]"
    if value == "":
        return '""'
    return "{}" if value == {} else str(value)


def kind_text(spec: Setting | MapOf) -> str:
    if isinstance(spec, MapOf):
        inner = kind_text(spec.schema) if isinstance(spec.schema, Setting) else "entry"
        return f"mapping: name → {inner}"
    kind = "choice" if isinstance(spec.kind, tuple) else {dict: "mapping"}.get(spec.kind)
    kind = kind or spec.kind.__name__
    return f"list of {kind}" if spec.list_of else kind


def default_text(spec: Setting | MapOf) -> str:
    if isinstance(spec, MapOf):
        return "required" if spec.required else "`{}`"
    if spec.default is REQUIRED:
        return "required"
    if spec.default is None:
        return "absent"
    return f"`{yaml_value(spec.default)}`" + (" (off)" if spec.off is not REQUIRED else "")


def allowed_text(spec: Setting | MapOf) -> str:
    """The choices, or each range as a rule (``must be > 0`` reads ``> 0``)."""
    if isinstance(spec, MapOf):
        return "—"
    if isinstance(spec.kind, tuple):
        return ", ".join(f"`{c}`" for c in spec.kind)
    rules = [r.rule or re.sub(r"^must (all )?be ", r"\1", r.wording) for r in spec.ranges]
    return "; ".join(rules) or "—"


def table_markdown(heading: str, where: str, table: dict[str, Any]) -> str:
    rows = [
        f"| `{key}` | {kind_text(s)} | {default_text(s)} | {allowed_text(s)} | {s.doc} |"
        for key, s in table.items()
    ]
    head = ["| key | type | default | allowed | what it sets |", "|---|---|---|---|---|"]
    return "\n".join([f"### {heading}: {where}", "", *head, *rows])


def reference() -> str:
    """Every table of the reference, in markdown (what sits between the markers)."""
    return "\n\n".join(table_markdown(*t) for t in TABLES)


def with_reference(text: str, where: Path = PARAMS_MD) -> str:
    """``text`` (docs/params.md) with the reference between its markers rendered anew."""
    pattern = re.compile(f"{re.escape(BEGIN)}.*?{re.escape(END)}", re.S)
    if len(pattern.findall(text)) != 1:
        raise PipelineError(f"{where} needs one pair of marker lines: {BEGIN} ... {END}")
    return pattern.sub(lambda _: f"{BEGIN}\n{reference()}\n{END}", text)


def stale_reference(path: Path = PARAMS_MD, write: bool = False) -> bool:
    """Whether ``path``'s reference differs from the catalogue's; with ``write``, rewrite it."""
    text = path.read_text()
    new = with_reference(text, path)
    if write and new != text:
        path.write_text(new)
    return new != text


def methods_text() -> str:
    """Every method name params.yaml may use, by kind: what it is and its source, the settings
    it reads, and how it corrects the class prior (``rules`` allows one correction a run)."""
    lines = []
    for heading, key, table in METHOD_KINDS:
        name_w, doc_w = max(map(len, table)), max(len(m.doc) for m in table.values())
        lines += [f"{heading} ({key}):"]
        for name, m in table.items():
            reads = ", ".join(m.reads) or "-"
            prior = f"corrects the prior: {m.corrects_prior or 'no'}"
            lines.append(f"  {name:<{name_w}}  {m.doc:<{doc_w}}  reads: {reads}; {prior}")
        lines.append("")
    aliases = ", ".join(
        f"{alias} = " + " + ".join(f"{k}: {v}" for k, v in pair.items())
        for alias, pair in catalog.MIXUP_ALIASES.items()
    )
    return "\n".join([*lines, f"Aliases (mixup): {aliases}"])
