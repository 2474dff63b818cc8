"""`regmix recipe`: put an optimised mixture into a `litgpt pretrain` recipe, keeping everything else.

    regmix recipe --mixture mixture.yaml --template recipes/pile/tinyllama_1b_regmix.yaml --out my_1b.yaml
    litgpt pretrain --config my_1b.yaml

The template's ``data`` must be ``regmix_plugin.MixtureData``. Only ``data.init_args.weights`` (and
``schedule``, set to ``null`` since MixtureData takes one or the other) change: they are rewritten in
place in the template's text, so every other key and every comment stays as it was. The comment above
``weights`` (and one at the top of the file) says where the new weights came from; whatever the template
said about its own weights there is dropped, since it no longer holds.

Before anything is written the recipe is parsed with ``litgpt pretrain``'s own parser (a mistyped key is
refused), and, when the template's corpus is on this machine, MixtureData's epoch guard runs against the
recipe's ``train.max_tokens``; a mixture chosen for another ``--constraints.target_tokens`` is reported.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

from regmix_plugin.atomic import write_text
from regmix_plugin.errors import RegmixError
from regmix_plugin.formats.mixture_yaml import read_mixture
from regmix_plugin.resources import resolve_recipe

_DATA_CLASS = "MixtureData"
_TOP = "# data.init_args.weights set by `regmix recipe`"


def recipe(mixture: Path, template: Path, out: Path) -> None:
    """Write a `litgpt pretrain` recipe: the template with MixtureData's weights from `regmix optimize`.

    Arguments:
        mixture: The mixture YAML written by `regmix optimize`, or a schedule.yaml written by `regmix schedule`
            (it becomes MixtureData's ``schedule:``, and ``weights`` becomes ``null``).
        template: A `litgpt pretrain` recipe whose ``data`` is ``regmix_plugin.MixtureData`` (e.g. one under
            ``recipes/``).
        out: The recipe to write.
    """
    import yaml

    template = resolve_recipe(template, "--template")
    if _is_schedule(mixture):
        return _schedule_recipe(Path(mixture), template, Path(out))
    record = read_mixture(mixture)
    text = template.read_text()
    try:
        config = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        raise ValueError(f"--template {template} is not valid YAML: {e}") from None
    init_args_node = _data_init_args(config, root, template)
    # A zero weight is written only for a domain the template already names (so its corpus surely has it).
    listed = config["data"]["init_args"].get("weights") or {}
    # Ten significant digits keep every bound `regmix optimize` enforced (to 1e-10) and stay readable.
    weights = {d: float(f"{w:.10g}") for d, w in record["weights"].items() if w > 0 or d in listed}
    _check_domains(config["data"]["init_args"], weights, mixture)
    provenance = _provenance(record, mixture, template)
    new_text = edit_weights(text, init_args_node, weights, provenance)
    expected, new_text = _verified(config, new_text, "weights", weights, "schedule", template)
    _check_runnable(expected, record, mixture, template)
    write_text(out, "\n".join(f"# {line}" for line in provenance) + "\n\n" + _strip_top(new_text))
    print(f"wrote {out}: {template} with the {len(weights)}-domain mixture of {mixture}")


def _verified(config: dict, new_text: str, key: str, value, other: str, template: Path) -> tuple[dict, str]:
    """The config the edited text must parse to (``key`` set, ``other`` nulled) and the text that does so.

    The in-place edit keeps the template's comments; if it did not produce exactly that config, the whole
    config is written instead (with a warning), so the result is right either way.
    """
    import yaml

    expected = copy.deepcopy(config)
    init_args = expected["data"]["init_args"]
    init_args[key] = value
    if other in init_args:
        init_args[other] = None
    if yaml.safe_load(new_text) != expected:
        warnings.warn(f"could not edit {template} in place; rewrote it whole, without its comments", stacklevel=3)
        new_text = yaml.safe_dump(expected, sort_keys=False)
    return expected, new_text


def _check_runnable(config: dict, record: dict, mixture: Path, template: Path) -> None:
    """Refuse a recipe `litgpt pretrain` would reject, or whose budget repeats a domain too often (when the
    corpus is here); warn when the mixture was chosen for another token budget."""
    from regmix_plugin.litgpt_compat import parse_or_explain

    parsed = parse_or_explain(
        copy.deepcopy(config),
        f"--template {template}",
        "Fix the template (run `litgpt pretrain --config TEMPLATE --print_config` to see the "
        "schema); nothing was written",
    )
    max_tokens = parsed.train.max_tokens
    target = (record.get("constraints") or {}).get("target_tokens")
    if target and max_tokens and int(target) != int(max_tokens):
        warnings.warn(
            f"--mixture {mixture} was chosen for --constraints.target_tokens {int(target):,}, but the recipe trains "
            f"train.max_tokens {int(max_tokens):,}: its per-domain epoch bounds were for the other budget; re-run "
            f"`regmix optimize --constraints.target_tokens {int(max_tokens)}` for this recipe",
            stacklevel=3,
        )
    data = parsed.data
    if max_tokens is None or not (Path(data.data_path) / "manifest.json").is_file():
        print(f"note: the corpus {data.data_path} is not here, so the epoch guard runs when `litgpt pretrain` sets up")
        return
    from litgpt import Config

    model = parsed.model_config or Config.from_name(parsed.model_name)
    seq = min(parsed.train.max_seq_length or model.block_size, model.block_size)
    devices = parsed.devices if isinstance(parsed.devices, int) and parsed.devices > 0 else 1
    data.max_tokens = max_tokens
    data.connect(None, batch_size=parsed.train.micro_batch_size, max_seq_length=seq)
    data.setup()
    try:
        data.check_budget(world_size=devices * parsed.num_nodes)
    except ValueError as e:
        raise RegmixError(f"--mixture {mixture} in --template {template}: {e}; nothing was written") from None


def edit_weights(text: str, init_args, weights: dict[str, float], provenance: list[str] = ()) -> str:
    """Replace ``weights`` (and ``schedule``) under the composed ``init_args`` mapping node, in the text.

    With ``provenance`` (lines), the comment above ``weights`` says where they came from: its first paragraphs
    (what the template said about its own weights) are replaced; its last paragraph, the key's description
    (paragraphs are separated by a bare ``#`` line), stays.
    """
    import yaml

    flow = "{" + ", ".join(f"{d}: {w!r}" for d, w in weights.items()) + "}"
    nodes = {k.value: (k, v) for k, v in init_args.value}
    edits = []  # (start index, end index, replacement); applied from the end so indices stay valid
    if "weights" in nodes:
        key, value = nodes["weights"]
        if isinstance(value, yaml.MappingNode) and not value.flow_style and value.value:
            start, end = _line_start(text, key.end_mark.index, next_line=True), _line_end(text, _last(value))
            comments = _key_comments(text[start:end])
            indent = " " * value.start_mark.column
            block = [line for d, w in weights.items() for line in comments.get(d, []) + [f"{indent}{d}: {w!r}"]]
            edits.append((start, end, "\n".join(block)))
        else:
            edits.append(_inline(text, value, flow))
    else:
        # Insert before the first key of init_args, at its indentation.
        first = init_args.value[0][0]
        at = _line_start(text, first.start_mark.index)
        indent = " " * first.start_mark.column
        edits.append((at, at, "".join(f"{indent}# {line}\n" for line in provenance) + f"{indent}weights: {flow}\n"))
    if "weights" in nodes and provenance:
        edits.append(_comment_block(text, nodes["weights"][0], provenance))
    if "schedule" in nodes:
        key, value = nodes["schedule"]
        if isinstance(value, (yaml.MappingNode, yaml.SequenceNode)) and not value.flow_style and value.value:
            edits.append((key.end_mark.index, _line_end(text, _last(value)), ": null"))
        else:
            edits.append(_inline(text, value, "null"))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _comment_block(text: str, key, provenance: list[str]) -> tuple[int, int, str]:
    """The edit that puts ``provenance`` in place of the first paragraphs of the comment above ``key``."""
    key_line = _line_start(text, key.start_mark.index)
    indent = " " * key.start_mark.column
    start = key_line
    while start > 0:
        prev = _line_start(text, start - 1)
        if not text[prev:start].strip().startswith("#"):
            break
        start = prev
    lines = text[start:key_line].splitlines()
    bare = [i for i, line in enumerate(lines) if line.strip() == "#"]
    description = lines[bare[-1] + 1 :] if bare else lines
    new = [f"{indent}# {line}" for line in provenance] + ([f"{indent}#"] + description if description else [])
    return start, key_line, "".join(line + "\n" for line in new)


def _strip_top(text: str) -> str:
    """The template without the file-top provenance of an earlier `regmix recipe` (re-running on its output)."""
    if not text.startswith(_TOP):
        return text
    head, _, rest = text.partition("\n\n")
    return rest


def _key_comments(block: str) -> dict[str, list[str]]:
    """The comment lines right above each key of a block mapping's text, so a domain keeps its description."""
    out, pending = {}, []
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(line)
        elif ":" in stripped:
            out[stripped.split(":", 1)[0].strip().strip("'\"")] = pending
            pending = []
    return out


def _inline(text: str, value, new: str) -> tuple[int, int, str]:
    start, end = value.start_mark.index, value.end_mark.index
    return start, end, (" " if start == end and text[start - 1 : start] == ":" else "") + new


def _last(node) -> int:
    """Text index just past the last scalar of a block collection (its own end mark may include comments)."""
    import yaml

    while isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, yaml.MappingNode) else last
    return node.end_mark.index


def _line_start(text: str, index: int, next_line: bool = False) -> int:
    if next_line:
        return text.index("\n", index) + 1
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    end = text.find("\n", index)
    return len(text) if end < 0 else end


def _data_init_args(config, root, template: Path):
    data = config.get("data") if isinstance(config, dict) else None
    class_path = data.get("class_path") if isinstance(data, dict) else None
    if not str(class_path or "").endswith(_DATA_CLASS) or not isinstance(data.get("init_args"), dict):
        raise ValueError(
            f"--template {template}: data.class_path is {class_path!r}, not regmix_plugin.{_DATA_CLASS} with "
            "init_args; start from a recipe under recipes/ that streams MixtureData"
        )
    node = next(v for k, v in root.value if k.value == "data")
    return next(v for k, v in node.value if k.value == "init_args")


def _check_domains(init_args: dict, weights: dict[str, float], mixture: Path) -> None:
    """If the template's corpus exists, every weighted domain must have train tokens in it."""
    data_path = init_args.get("data_path")
    if not data_path or not (Path(data_path) / "manifest.json").is_file():
        return
    from regmix_plugin.formats.manifest import read_manifest

    known = set(read_manifest(data_path, flag="data.init_args.data_path").train_domains())
    missing = sorted(d for d, w in weights.items() if w > 0 and d not in known)
    if missing:
        raise ValueError(
            f"--mixture {mixture} weights {', '.join(missing)}, which the template's corpus {data_path} has no "
            f"train data for (it has {', '.join(sorted(known))}); use the template of the corpus the runs used"
        )


def _provenance(record: dict, mixture: Path, template: Path) -> list[str]:
    """Where the weights came from, as comment lines (without ``#``)."""
    prov, pred = record.get("provenance"), record.get("prediction")
    lines = [f"{_TOP[2:]} from {mixture} (template: {template})."]
    if prov and pred:
        lines += [
            f"That mixture was chosen by `regmix optimize` on {prov['created']} with a {prov['regressor']} model "
            f"({prov['model']}),",
            f"CV Spearman {prov['cv_spearman']:.3f} over {prov['n_runs']} proxy runs; predicted target "
            f"{pred['at_mixture']:.4f} vs {pred['at_prior']:.4f} at the prior.",
        ]
    target = (record.get("constraints") or {}).get("target_tokens")
    if target:
        lines.append(f"It was chosen for a run of {int(target):,} tokens (--constraints.target_tokens).")
    return lines


def _is_schedule(path: Path) -> bool:
    import yaml

    from regmix_plugin.formats.schedule import is_schedule_record

    try:
        return is_schedule_record(yaml.safe_load(Path(path).read_text()))
    except (OSError, yaml.YAMLError):
        return False  # read_mixture reports it


def _schedule_recipe(mixture: Path, template: Path, out: Path) -> None:
    """The template with MixtureData's ``schedule:`` from a RegMix-D schedule.yaml (``weights: null``)."""
    import yaml

    from regmix_plugin.formats.schedule import read_schedule

    sched = read_schedule(mixture, flag="--mixture")
    text = template.read_text()
    try:
        config, root = yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as e:
        raise ValueError(f"--template {template} is not valid YAML: {e}") from None
    init_args_node = _data_init_args(config, root, template)
    init_args = config["data"]["init_args"]
    if init_args.get("max_tokens") is None and len(sched.stages) > 1:
        raise ValueError(
            f"--template {template}: data.init_args.max_tokens is not set, and the schedule's "
            "until_fraction switches need it; set it to train.max_tokens in the template"
        )
    listed = set(init_args.get("weights") or {})
    stages = sched.mixture_data_schedule(keep_zero=listed)
    for st in stages:
        _check_domains(init_args, st["weights"], mixture)
    flow = yaml.safe_dump(stages, default_flow_style=True, width=10**9, sort_keys=False).strip()
    nodes = {k.value: (k, v) for k, v in init_args_node.value}
    edits = []
    for key_name, new in (("schedule", flow), ("weights", "null")):
        if key_name in nodes:
            key, value = nodes[key_name]
            if isinstance(value, (yaml.MappingNode, yaml.SequenceNode)) and not value.flow_style and value.value:
                edits.append((key.end_mark.index, _line_end(text, _last(value)), ": " + new))
            else:
                edits.append(_inline(text, value, new))
        elif key_name == "schedule":
            first = init_args_node.value[0][0]
            at = _line_start(text, first.start_mark.index)
            edits.append((at, at, " " * first.start_mark.column + f"schedule: {flow}\n"))
    new_text = text
    for start, end, new in sorted(edits, reverse=True):
        new_text = new_text[:start] + new + new_text[end:]
    expected, new_text = _verified(config, new_text, "schedule", stages, "weights", template)
    _check_runnable(expected, {}, mixture, template)
    pred = sched.prediction
    head = [
        f"# data.init_args.schedule set by `regmix recipe` from {mixture} (template: {template}):",
        f"# {len(stages)} RegMix-D stage(s) by `regmix schedule`"
        + (f"; predicted target {pred['at_schedule']:.4f}" if "at_schedule" in pred else "")
        + ".",
    ]
    write_text(out, "\n".join(head) + "\n\n" + new_text)
    print(f"wrote {out}: {template} with the {len(stages)}-stage schedule of {mixture}")
