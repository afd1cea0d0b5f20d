"""Where a region generator's weights come from: a transformers folder or a Hugging Face id.

* a folder with ``config.json`` and ``model.safetensors`` (or a safetensors index and its shards),
  as ``SamModel.save_pretrained`` / ``Sam2Model.save_pretrained`` write it;
* a Hugging Face id (``facebook/sam2.1-hiera-large``, ``facebook/sam-vit-base``, …) through
  ``huggingface_hub``'s cache: the cache first (offline works once the files are there), the Hub
  only for what is missing. The config is read first, so a repository that holds no SAM / SAM2
  model is refused in one line before any weights are downloaded.

Only safetensors are loaded (pickled ``.bin`` files can run code when loaded).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from ..errors import ItaclipError, one_line
from ..settings import weights_identity

#: The generator kinds and their default weights (Hugging Face ids, transformers format).
DEFAULT_REGION_WEIGHTS = {"sam2": "facebook/sam2.1-hiera-large", "sam": "facebook/sam-vit-base"}
GENERATOR_KINDS = tuple(DEFAULT_REGION_WEIGHTS)
#: The oldest transformers that has each kind's model.
MIN_TRANSFORMERS = {"sam": "4.29", "sam2": "4.56"}
#: transformers ``model_type`` values each generator kind loads (SAM2 hub checkpoints are ``sam2_video``
#: configs; ``Sam2Model`` loads their image part, as transformers' mask-generation mapping does).
MODEL_TYPES = {"sam": ("sam",), "sam2": ("sam2", "sam2_video")}
WEIGHT_FILE, WEIGHT_INDEX = "model.safetensors", "model.safetensors.index.json"
HF_EXTRA_HINT = "pip install 'itaclip[hf]'"


@dataclass(frozen=True)
class ResolvedWeights:
    """A local folder ready for ``from_pretrained``, and what identifies its weights."""

    folder: Path
    identity: str
    """``hf:ORG/NAME@COMMIT`` for hub files, ``folder-sha256:…`` for a local folder."""
    label: str
    """How the user named them (for messages and logs)."""


def resolve_weights(kind: str, weights: Union[str, os.PathLike]) -> ResolvedWeights:
    """Find ``weights`` for a ``kind`` (``"sam"``/``"sam2"``) generator; see the module docstring."""
    text = os.fspath(weights)
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        check_config(kind, _read_config(path / "config.json", text), text)
        _weight_paths(path, text)
        return ResolvedWeights(path, weights_identity(path), text)
    if path.is_file():
        raise ItaclipError(f"{text} is a file: region weights are a transformers folder (config.json + "
                           f"model.safetensors) or a Hugging Face id such as {_example(kind)}")
    if text.count("/") != 1 or text.startswith(("/", ".", "~")) or text.endswith("/"):
        raise ItaclipError(f"region weights {text} are neither a folder nor a Hugging Face id such as "
                           f"{_example(kind)}")
    return _resolve_hub(kind, text)


def check_config(kind: str, config: dict, source: str) -> None:
    """Refuse a config that is not a ``kind`` model (from the config alone, before any weights)."""
    model_type = config.get("model_type")
    if model_type in MODEL_TYPES[kind]:
        return
    other = next((name for name, types in MODEL_TYPES.items() if model_type in types), None)
    if other:
        raise ItaclipError(f"{source} is a {other.upper()} model: use --region-generator {other}")
    raise ItaclipError(f"{source} is not a transformers {kind.upper()} model (model_type {model_type!r}); "
                       f"--region-generator {kind} takes e.g. {_example(kind)}")


def _example(kind: str) -> str:
    return DEFAULT_REGION_WEIGHTS[kind]


def _read_config(path: Path, source: str) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ItaclipError(f"{source} has no config.json: region weights are a transformers folder "
                           "(config.json + model.safetensors)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ItaclipError(f"cannot read {source}/config.json: {one_line(exc)}") from None
    if not isinstance(config, dict):
        raise ItaclipError(f"{source}/config.json is not a model config")
    return config


def _weight_paths(folder: Path, source: str) -> list[Path]:
    if (folder / WEIGHT_FILE).is_file():
        return [folder / WEIGHT_FILE]
    if (folder / WEIGHT_INDEX).is_file():
        return [folder / name for name in _shards(folder / WEIGHT_INDEX)]
    pickled = [name for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")
               if (folder / name).is_file()]
    if pickled:
        raise ItaclipError(f"{source} has only {pickled[0]} (a pickle, which can run code when loaded): "
                           "save the model with safetensors (model.save_pretrained(folder))")
    raise ItaclipError(f"{source} has no {WEIGHT_FILE}")


def _shards(index: Path) -> list[str]:
    try:
        names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, AttributeError) as exc:
        raise ItaclipError(f"cannot read {index}: {one_line(exc)}") from None
    if not all(isinstance(name, str) and name.endswith(".safetensors") and "/" not in name for name in names):
        raise ItaclipError(f"{index} lists files that are not safetensors shards of its folder")
    return names


# ---------------------------------------------------------------------------------------------- hub


class _Absent(Exception):
    """The repository has no such file."""


def _resolve_hub(kind: str, repo_id: str) -> ResolvedWeights:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise ItaclipError(f"{repo_id} is no local folder; to fetch it from the Hugging Face Hub install "
                           f"huggingface_hub ({HF_EXTRA_HINT})") from None
    try:
        config_path = _hub_file(repo_id, "config.json")
    except _Absent:
        raise ItaclipError(f"{repo_id} has no config.json: it is not a transformers {kind.upper()} "
                           "repository") from None
    check_config(kind, _read_config(config_path, repo_id), repo_id)
    try:
        _hub_file(repo_id, WEIGHT_FILE)
    except _Absent:
        try:
            index = _hub_file(repo_id, WEIGHT_INDEX)
        except _Absent:
            raise ItaclipError(f"{repo_id} has no {WEIGHT_FILE} (only safetensors are loaded: pickled "
                               "weights can run code)") from None
        for name in _shards(index):
            _hub_file(repo_id, name)
    folder = config_path.parent  # snapshots/<commit>/: the files above, as from_pretrained wants them
    return ResolvedWeights(folder, f"hf:{repo_id}@{folder.name}", repo_id)


def _hub_file(repo_id: str, filename: str) -> Path:
    """One file of a hub repository: from the cache when it is there, else downloaded into it."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    except Exception:  # noqa: BLE001 - a damaged cache entry: the download below repairs it
        pass
    try:
        return Path(hf_hub_download(repo_id, filename))
    except LocalEntryNotFoundError:  # offline (or unreachable) and not in the cache
        raise ItaclipError(f"{repo_id}: {filename} is not in the Hugging Face cache "
                           f"({constants.HF_HUB_CACHE}) and the Hub cannot be reached; connect once to "
                           "download it, or pass a local folder") from None
    except RepositoryNotFoundError:
        raise ItaclipError(f"{repo_id} is no local folder and no Hugging Face repository (a private or "
                           "gated one needs `hf auth login`)") from None
    except EntryNotFoundError:
        raise _Absent(filename) from None
    except Exception as exc:  # noqa: BLE001 - HTTP and file-system errors alike
        raise ItaclipError(f"could not get {filename} of {repo_id} from the Hugging Face Hub "
                           f"({one_line(exc)})") from None


def load_model(kind: str, resolved: ResolvedWeights, device) -> "torch.nn.Module":  # noqa: F821
    """The fp32 transformers model of ``resolved`` on ``device``, in eval mode (safetensors only)."""
    model_class = transformers_classes(kind)[0]
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # a sam2_video config loaded as Sam2Model is expected, not news
    hf_logging.disable_progress_bar()  # the caller reports loading in its own words
    try:
        model = model_class.from_pretrained(resolved.folder, use_safetensors=True, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ItaclipError(f"cannot load region weights {resolved.label}: {one_line(exc, 300)}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model.float().eval().to(device)


def transformers_classes(kind: str) -> tuple[type, type]:
    """(model class, image processor class) of ``kind``; a one-line error when transformers lacks them."""
    try:
        if kind == "sam2":
            from transformers import Sam2Model

            try:
                from transformers import Sam2ImageProcessor
            except ImportError:  # transformers 4.x names its only SAM2 image processor "…Fast"
                from transformers import Sam2ImageProcessorFast as Sam2ImageProcessor
            return Sam2Model, Sam2ImageProcessor
        from transformers import SamImageProcessor, SamModel

        return SamModel, SamImageProcessor
    except ImportError:
        raise ItaclipError(f"--region-generator {kind} needs transformers {MIN_TRANSFORMERS[kind]} or newer "
                           f"({HF_EXTRA_HINT})") from None
