"""A user's own PyTorch model: `model.module: "package.module:factory"` or `"path/to/file.py:factory"`.

The factory is called with `model.kwargs`, plus `num_classes` and `in_channels` from the dataset when
its signature names them and the kwargs leave them out (a factory taking **kwargs, as torchvision's and
timm's, gets num_classes only). It must return an nn.Module mapping
(B, C, H, W) images to (B, num_classes) logits.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from netaug.errors import UserError


def resolve_reference(ref: str) -> str:
    """`ref` with a file path made absolute (so Ray workers elsewhere in the tree find it); checks the form."""
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise UserError(f"model.module: expected 'package.module:factory' or 'path/to/file.py:factory', got {ref!r}")
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"model.module: no such file: {target}")
        return f"{path}:{attr}"
    return ref


def load_factory(ref: str) -> Callable[..., nn.Module]:
    """The callable `ref` names (imported from a package module or executed from a file)."""
    target, _, attr = resolve_reference(ref).rpartition(":")
    if target.endswith(".py"):
        module = _imported_as_user(Path(target))  # the user's own import of the file, so isinstance holds
        name = "netaug_user_" + hashlib.sha1(target.encode()).hexdigest()[:12]
        module = module or sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, target)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # classes defined there must be importable by name (pickle, fx)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[name]
                raise UserError(f"model.module: {target} fails to import: {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UserError(f"model.module: cannot import {target}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"model.module: {target} has no callable {attr!r}")
    return factory


def _imported_as_user(path: Path):
    """The module a user's own `import` gives for the file at `path`: one already imported from it, or, when its
    folder is on sys.path and its name is free, the file imported under that name (a later `import` of the user
    then gets this module and its classes, not copies)."""
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == path:
            return module
    folders = {Path(p or ".").resolve() for p in sys.path}
    if path.parent in folders and path.stem.isidentifier() and path.stem not in sys.modules:
        spec = importlib.util.find_spec(path.stem)
        if spec is not None and spec.origin and Path(spec.origin).resolve() == path:
            try:
                return importlib.import_module(path.stem)
            except Exception as exc:
                raise UserError(f"model.module: {path} fails to import: {type(exc).__name__}: {exc}") from None
    return None


def factory_kwargs(factory: Callable, kwargs: dict, num_classes: int, in_channels: int) -> dict:
    """`kwargs` plus num_classes / in_channels where the factory takes them and they are not given."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    full = dict(kwargs)
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        # a **kwargs factory (torchvision's, timm's) gets num_classes, the name they all take, not in_channels
        if key not in full and (key in params or (takes_any and key == "num_classes")):
            full[key] = value
    return full


def build_user_model(ref: str, kwargs: dict, num_classes: int, in_channels: int, resolution: int
                     ) -> tuple[nn.Module, dict]:
    """(the user's model, the kwargs it was built with), checked on one (1, C, H, W) input."""
    factory = load_factory(ref)
    full = factory_kwargs(factory, kwargs or {}, num_classes, in_channels)
    try:
        model = factory(**full)
    except Exception as exc:
        raise UserError(f"model.module: {ref}(**{full}) failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model.module: {ref} returned a {type(model).__name__}, not an nn.Module")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, in_channels, resolution, resolution))
    except Exception as exc:
        raise UserError(f"model.module: {ref} fails on a (1, {in_channels}, {resolution}, {resolution}) input: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.shape != (1, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"model.module: {ref} returns {shape} for one image; the dataset has {num_classes} classes "
                        "(set num_classes in model.kwargs, or let the factory take num_classes)")
    return model, full
