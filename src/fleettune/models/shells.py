"""Shallow module shells: new module trees that share weights but not structure with the original."""

from __future__ import annotations

import copy

from torch import nn


def get_module(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


def get_layers(root: nn.Module, path: str) -> nn.ModuleList:
    layers = get_module(root, path)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{path} is a {type(layers).__name__}, not a ModuleList")
    return layers


def _shell(module: nn.Module) -> nn.Module:
    # copy.copy shares __dict__ values; giving the shell its own child/parameter/buffer dicts
    # lets us swap children on it without touching the original tree.
    new = copy.copy(module)
    new._modules = dict(module._modules)
    new._parameters = dict(module._parameters)
    new._buffers = dict(module._buffers)
    return new


def with_replaced(root: nn.Module, replacements: dict[str, nn.Module]) -> nn.Module:
    """A shell of `root` where each dotted path is replaced; every module off those paths is shared."""
    new_root = _shell(root)
    shelled: set[int] = set()
    for path, replacement in replacements.items():
        parts = path.split(".")
        parent = new_root
        for part in parts[:-1]:
            child = getattr(parent, part)
            # Shell each ancestor once: a second replacement under the same parent reuses it.
            if id(child) not in shelled:
                child = _shell(child)
                shelled.add(id(child))
                setattr(parent, part, child)
            parent = child
        setattr(parent, parts[-1], replacement)
    return new_root


class InputsEmbedsPassthrough(nn.Module):
    """Stands in for an encoder's embedding module on the server: the cut tensor goes straight in."""

    def forward(self, input_ids=None, inputs_embeds=None, **kwargs):
        if inputs_embeds is None:
            raise ValueError("a server stage takes hidden states (inputs_embeds), not token ids")
        return inputs_embeds
