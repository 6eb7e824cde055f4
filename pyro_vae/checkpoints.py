"""What a checkpoint file holds, read without running code, and what it was trained from.

Checkpoints are read with ``torch.load(weights_only=True)`` only, so a planted pickle payload is
refused without running. Each checkpoint records the resolved spec (flattened to dotted keys)
and SHA-256 digests of the spec and the data splits; resume and evaluate refuse a config.yaml or
data that differ from that record in any key other than :data:`RESUMABLE` and ``evaluate.*``
(keys added to the spec since the checkpoint was written are not compared). The run directory
that holds the files is :class:`pyro_vae.rundir.Run`.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro_vae.console import notice
from pyro_vae.registry import SpecError

if TYPE_CHECKING:  # torch: imported where a checkpoint or the data are read
    from pyro_vae.bundle import DataBundle
    from pyro_vae.spec import Spec
    from pyro_vae.vae import VAE

#: Spec keys ``--resume`` may change besides ``evaluate.*``: none alters what a checkpoint means.
RESUMABLE = (
    "train.max_epochs",
    "train.lr",
    "train.gradient_clip",
    "train.progress",
    "train.logger",
    "train.mlflow_uri",
    "train.mlflow_experiment",
    "train.jit",
    "train.keep_checkpoints",
    "train.blowup_factor",
)
RECORD = "pyro_vae"  # the checkpoint entry holding the spec and data digests


def checkpoint_step(path: Path) -> int:
    """The global step (optimizer steps taken) a checkpoint holds."""
    return global_step(read_checkpoint(path), path)


def global_step(checkpoint: dict[str, Any], path: Path) -> int:
    """The optimizer steps the checkpoint dictionary read from ``path`` holds."""
    step = checkpoint.get("global_step")
    if not isinstance(step, int):
        raise SpecError(str(path), "holds no training state (no global_step)")
    return step


def read_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)``: a checkpoint never runs code on loading."""
    import torch

    try:
        with warnings.catch_warnings():  # about a foreign file's pickle protocol: the error says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise SpecError(str(path), f"cannot read checkpoint: {_load_problem(exc, path)}") from None
    if not isinstance(state, dict):
        raise SpecError(
            str(path),
            f"cannot read checkpoint: it holds a {type(state).__name__}, "
            "not a checkpoint's dictionary",
        )
    return state


def _load_problem(exc: Exception, path: Path) -> str:
    """torch.load's complaint about ``path`` in short; for a weights-only refusal, what the file
    asked for."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch puts terminal escapes in it
    refused = (
        re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", text, re.S)
        or re.search(r"((?:Trying to load|Unsupported) .+?)(?:\.\s|\n|$)", text)
        if "Weights only load failed" in text or "WeightsUnpickler" in text
        else None
    )
    if refused:
        return (
            f"refused by weights-only loading ({refused.group(1)}); a pyro-vae checkpoint "
            "holds only tensors, numbers and strings"
        )
    if _cut_off(path):  # torch says OSError: [Errno 22] Invalid argument, or a zip reader's error
        return "the file ends early: a zip archive cut short (truncated while written or copied)"
    if isinstance(exc, EOFError) or not text.strip():  # torch says nothing of a cut-off pickle
        return f"{type(exc).__name__}: the file ends early (truncated, or not a checkpoint)"
    return f"{type(exc).__name__}: {text.split('. ')[0]}"


def _cut_off(path: Path) -> bool:
    """Whether ``path`` begins as a zip archive, torch's checkpoint format, but lacks the
    directory that ends a whole one: a file cut short."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(f)
    except OSError:
        return False


# ---- what a checkpoint was trained from --------------------------------------------------------


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"a.b": leaf}``."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changeable(key: str) -> bool:
    """Keys that may differ between a checkpoint's spec and the run's: :data:`RESUMABLE`,
    ``evaluate.*``."""
    return key in RESUMABLE or key.startswith("evaluate.")


def data_digest(bundle: DataBundle) -> str:
    """SHA-256 over the train, val and test splits' bytes and shapes."""
    import torch

    digest = hashlib.sha256()
    for x in (bundle.train, bundle.val, bundle.test):
        digest.update(repr(tuple(x.shape)).encode())
        digest.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def spec_record(spec: Spec, data_sha256: str) -> dict[str, Any]:
    """The checkpoint's ``pyro_vae`` entry: the flattened spec, its digest (over the keys that
    must not change) and the data's digest."""
    keys = flat(spec.to_dict())
    fixed = json.dumps({k: v for k, v in keys.items() if not changeable(k)}, sort_keys=True)
    return {
        "spec": keys,
        "spec_sha256": hashlib.sha256(fixed.encode()).hexdigest(),
        "data_sha256": data_sha256,
    }


def check_record(
    checkpoint: Mapping[str, Any],
    path: Path,
    spec: Spec,
    data: Callable[[], str] | None,
    config: Path,
) -> None:
    """SpecError naming the changed keys when ``spec`` (from ``config``) or the data (``data``,
    a thunk for their digest; None: not checked) differ from what the checkpoint at ``path`` was
    trained on; a one-line notice for a checkpoint written before checkpoints held that record."""
    record = checkpoint.get(RECORD)
    if record is None:
        notice(f"{path} predates spec and data digests: {config} is used as it is, unchecked")
        return
    if not isinstance(record, Mapping) or not isinstance(record.get("spec"), Mapping):
        raise SpecError(str(path), f"cannot read checkpoint: a malformed {RECORD!r} entry")
    saved, now = record["spec"], flat(spec.to_dict())
    changed = changed_keys(saved, now)
    if changed:
        text = ", ".join(f"{k} ({saved[k]!r} -> {now[k]!r})" for k in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise SpecError(
            str(config),
            f"differs from the spec its checkpoint {path} was trained "
            f"with: {text}{more}; config.yaml was edited or the checkpoint comes "
            "from another run (--resume --set changes the keys that may change)",
        )
    if data is not None and record.get("data_sha256") != data():
        raise SpecError(
            str(path),
            "was trained on other data: the data splits' SHA-256 "
            "differs (the data files or data.* changed since)",
        )


def changed_keys(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The flattened spec keys that are not :func:`changeable` and differ (a key that only one
    side has was added to the spec or removed from it since, and is not compared)."""
    return [
        k
        for k in sorted(saved.keys() & now.keys())
        if not changeable(k) and _canonical(saved[k]) != _canonical(now[k])
    ]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def load_weights(
    vae: VAE,
    path: Path,
    config: Path,
    spec: Spec | None = None,
    data: Callable[[], str] | None = None,
) -> dict[str, Any]:
    """Load the checkpoint's VAE weights into ``vae`` and return the whole checkpoint;
    SpecError when they do not fit the VAE built from ``config`` (the run's config.yaml), or (given ``spec`` and
    ``data``, a thunk for the data digest) when the checkpoint was trained from another spec or
    data (:func:`check_record`)."""
    checkpoint = read_checkpoint(path)
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise SpecError(str(path), "cannot read checkpoint: no state_dict in it")
    weights = {k.removeprefix("vae."): v for k, v in state.items() if k.startswith("vae.")}
    try:
        vae.load_state_dict(weights)
    except RuntimeError as exc:
        raise SpecError(
            str(path),
            f"checkpoint does not match {config} (trained from "
            f"another spec?): {_mismatch(str(exc))}",
        ) from None
    if spec is not None and data is not None:
        check_record(checkpoint, path, spec, data, config)
    return checkpoint


def _mismatch(text: str) -> str:
    """load_state_dict's complaint in short: the first tensor whose shape differs, or the text."""
    sizes = re.findall(
        r"size mismatch for (\S+): copying a param with shape torch.Size\((.*?)\) "
        r"from checkpoint, the shape in current model is torch.Size\((.*?)\)",
        text,
    )
    if not sizes:
        return " ".join(text.split())[:300]
    name, saved, built = sizes[0]
    more = f" (and {len(sizes) - 1} more tensors)" if len(sizes) > 1 else ""
    return f"size mismatch for {name}: {saved} in the checkpoint, {built} from the spec{more}"
