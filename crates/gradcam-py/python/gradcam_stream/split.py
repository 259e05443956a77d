"""Splitting a classifier into the TorchScript gradcam-stream runs: `features` up to the target
layer, `head` after it, `forward` both. `gradcam_stream.explain(model=module, layer=…)` splits a
live `nn.Module` with it in the Python process; scripts/export_model.py is a command-line front
end of the same code (torchvision by name, a factory, Keras, detectors).

The TorchScript module has three methods:
  features(x: [B,3,H,W] normalized) -> A: [B,C,h,w]   activations of the target layer
            or (A, *carry)                            with the tensors the head needs besides
  head(A, *carry) -> logits: [B,K]                      everything after the target layer
  forward(x) -> logits                                  head(*features(x))
so Grad-CAM needs a backward pass through `head` only. The sidecar (the same name, .json) holds
the input size, channel order, mean/std, target layer, how its output became a map, and the
class names.

A model is split at a layer with torch.fx: the layer is a module name (`layer4`, `features.7`)
or an fx node name, and the head is every operation after it. What is computed before the layer
and used after it (a skip connection's input, a transformer's residual stream) is carried to the
head. A transformer's tokens become a map as pytorch-grad-cam's reshape transform makes them: a
ViT's or DeiT's leading class tokens left out and the patch tokens laid on their grid, a Swin's
channels-last output permuted. Errors are `ExportError`, one line each.
"""
import difflib
import json
import warnings

import torch
from torch import nn

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def imagenet_classes():
    # torchvision carries the 1000 ImageNet class names in its code: no download.
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])



class Split(nn.Module):
    def __init__(self, features, head):
        super().__init__()
        self.feat = features
        self.hd = head

    def features(self, x):
        return self.feat(x)

    def head(self, a, *carry):
        return self.hd(a, *carry)

    def forward(self, x):
        out = self.feat(x)
        return self.hd(*out) if isinstance(out, tuple) else self.hd(out)



# Transformers: the last block's first norm, as pytorch-grad-cam's tutorials target (a ViT
# classifies from the class token alone, so after the last block the patch tokens get no gradient).
TRANSFORMERS = ("vit_", "swin_")
BLOCK_NORMS = ("ln_1", "norm1")



# Leading tokens a transformer may keep beside its patch grid: class, distillation, registers.
MAX_PREFIX_TOKENS = 8



class ExportError(Exception):
    """A reason the export cannot go on, said in one line."""


def layer_names(model):
    """Module names a user can give as --layer (the top two levels; deeper ones work too)."""
    return [n for n, _ in model.named_modules() if n and n.count(".") < 2]


def last_block_norm(model):
    """The first norm of the model's last transformer block (`encoder.layers.encoder_layer_11.ln_1`)."""
    norms = [f"{n}.{a}" if n else a for n, m in model.named_modules() for a in BLOCK_NORMS
             if isinstance(getattr(m, a, None), nn.LayerNorm)]
    return norms[-1] if norms else None



class Layout:
    """How the target layer's output becomes the map [B, C, h, w] every method works on, and back.

    nchw: a conv layer's output, as it is.
    nhwc: a channels-last [B, h, w, C] (Swin's blocks), permuted.
    tokens: [B, P + h·w, C] (ViT, DeiT): the P leading tokens (class, distillation) are left out
        of the map, as pytorch-grad-cam's reshape transform leaves them, and carried to the head;
        the others are laid row by row on the h x w patch grid.
    """

    def __init__(self, kind, shape, prefix=0, grid=None):
        self.kind, self.shape, self.prefix, self.grid = kind, list(shape), prefix, grid

    def to_map(self, s):
        """The layer's output → (map [B, C, h, w], leading tokens to carry)."""
        if self.kind == "nhwc":
            return s.permute(0, 3, 1, 2), []
        if self.kind == "tokens":
            grid = s[:, self.prefix:, :].transpose(1, 2).unflatten(2, self.grid)  # [B, C, h, w]
            return grid, ([s[:, :self.prefix, :]] if self.prefix else [])
        return s, []

    def from_map(self, a, lead):
        """(map, carried leading tokens) → the layer's output, differentiably in the map."""
        if self.kind == "nhwc":
            return a.permute(0, 2, 3, 1)
        if self.kind == "tokens":
            tokens = a.flatten(2).transpose(1, 2)  # [B, h·w, C]
            return torch.cat([lead[0], tokens], 1) if self.prefix else tokens
        return a

    def carried(self):
        return 1 if self.kind == "tokens" and self.prefix else 0

    def describe(self):
        shape = "[B, " + ", ".join(map(str, self.shape[1:])) + "]"
        if self.kind == "nhwc":
            return f"{shape} channels-last, permuted to [B, C, h, w]"
        if self.kind == "tokens":
            lead = (f"{self.prefix} leading token{'s' if self.prefix > 1 else ''} left out, "
                    if self.prefix else "")
            return f"tokens {shape}: {lead}{self.grid[0]}x{self.grid[1]} patch tokens laid on their grid"
        return f"{shape} as it is"


def layout_of(s, module, layer, input_size):
    """The Layout of the layer's output `s` (a sample), or one line saying why it has none."""
    if not isinstance(s, torch.Tensor):
        raise ExportError(f"--layer {layer!r} gives a {type(s).__name__}, not a tensor; "
                          "pick a layer whose output is one tensor")
    shape = list(s.shape)
    if s.dim() == 4:
        # A LayerNorm normalizes its last dimension: channels-last (Swin's norm1, norm).
        last = isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (shape[3],)
        return Layout("nhwc" if last else "nchw", shape)
    if s.dim() == 3:
        h, w = input_size
        n = shape[1]
        for p in range(0, min(MAX_PREFIX_TOKENS, n - 1) + 1):
            m = n - p
            # The grid has the input's aspect: gh / gw = h / w.
            for gh in range(1, m + 1):
                if m % gh == 0 and gh * w == (m // gh) * h:
                    return Layout("tokens", shape, p, (gh, m // gh))
        raise ExportError(
            f"--layer {layer!r} gives {n} tokens, which do not form a patch grid of the "
            f"{h}x{w} input (after up to {MAX_PREFIX_TOKENS} leading tokens); pick a layer "
            "inside the transformer blocks, such as the last block's first norm")
    raise ExportError(
        f"--layer {layer!r} gives a {s.dim()}-D output {shape}, not a spatial map; Grad-CAM needs a "
        "conv layer's [B, C, h, w] or a transformer block's tokens: pick an earlier layer")


def node_names(tracer, graph):
    # A module call is named by its module's path; NodePathTracer's own names renumber repeated
    # ones (a block's `ln_2` would be called `ln_1`).
    return {n: n.target if n.op == "call_module" else tracer.node_to_qualname.get(n, n.name)
            for n in graph.nodes}


def split_at(model, layer, input_size, device="cpu"):
    """(features, head, layout): the model cut after the last operation inside `layer`.

    features(x) gives the map [B, C, h, w] (see Layout), followed by every tensor computed
    before the cut and used after it (a skip connection's input, a ViT's residual stream, its
    class token); head(map, *those) gives the logits. Gradients reach the map only through the
    layer's output, as they do in pytorch-grad-cam's hooks.
    """
    from torchvision.models.feature_extraction import NodePathTracer

    # Grad-CAM differentiates the head with respect to its input: no in-place operations there.
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    tracer = NodePathTracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:  # noqa: BLE001 (torch.fx raises many kinds)
        raise ExportError(f"torch.fx cannot trace the model ({one_line(e)}); its forward must not "
                          "branch on tensor values") from e
    for n in graph.nodes:
        if n.kwargs.get("inplace"):
            n.kwargs = {**n.kwargs, "inplace": False}
    names = node_names(tracer, graph)
    inside = [n for n in graph.nodes if n.op != "output"
              and (names[n] == layer or names[n].startswith(layer + "."))]
    if not inside:
        close = difflib.get_close_matches(layer, [n for n, _ in model.named_modules() if n], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ExportError(f"--layer {layer!r} is not a layer of this model; valid layers: "
                          + ", ".join(layer_names(model)) + hint)
    split = inside[-1]
    features, head, crossing = cut(graph, tracer.root, [split], ["a"])

    h, w = input_size
    with torch.no_grad():
        out = features(torch.rand(2, 3, h, w, device=device))
    for n, v in zip(crossing, out[1:]):
        if not isinstance(v, torch.Tensor):
            raise ExportError(
                f"the model cannot be split at {layer!r}: {names[n]} ({type(v).__name__}) is computed "
                "before it and used after it, and only tensors can be carried across; pick a later layer")
    layout = layout_of(out[0], dict(model.named_modules()).get(layer), layer, input_size)
    return Features(features, layout), Head(head, layout), layout


def cut(graph, root, levels, level_names, outputs=None):
    """A torch.fx graph cut in two after the nodes `levels`: (features, head, carried).

    features(x) gives the levels, then every tensor computed before the cut and used after it
    (`carried`: a skip connection's input, a ViT's residual stream); head(*levels, *carried)
    gives what the graph gave, or `outputs(env)`, a function of the head's nodes by name."""
    from torch.fx import Graph, GraphModule

    nodes = list(graph.nodes)
    last = max(nodes.index(l) for l in levels)
    before, after = nodes[:last + 1], nodes[last + 1:]
    early = set(before)
    carried = []
    for n in after:
        for x in n.all_input_nodes:
            if x in early and x not in levels and x.op != "get_attr" and x not in carried:
                carried.append(x)

    feat = Graph()
    fenv = {}
    for n in before:
        fenv[n] = feat.node_copy(n, lambda x: fenv[x])
    feat.output(tuple(fenv[n] for n in [*levels, *carried]))
    features = GraphModule(root, feat)
    features.graph.eliminate_dead_code()
    features.recompile()

    head = Graph()
    env = {n: head.placeholder(name) for n, name in zip(levels, level_names)}
    for i, n in enumerate(carried):
        env[n] = head.placeholder(f"carry{i}")

    def lookup(x):
        if x not in env:  # a parameter or buffer
            env[x] = head.node_copy(x)
        return env[x]

    for n in after:
        if n.op == "placeholder" or (n.op == "output" and outputs is not None):
            continue
        env[n] = head.node_copy(n, lookup)
    if outputs is not None:
        head.output(outputs({k.name: v for k, v in env.items()}))
    head.lint()
    head = GraphModule(root, head)
    if outputs is not None:  # the outputs left out leave nodes that lead nowhere
        head.graph.eliminate_dead_code()
        head.recompile()
    return features, head, carried


class Features(nn.Module):
    def __init__(self, gm, layout):
        super().__init__()
        self.gm = gm
        self.layout = layout

    def forward(self, x):
        out = self.gm(x)
        a, lead = self.layout.to_map(out[0])
        carry = [*lead, *out[1:]]
        return (a, *carry) if carry else a


class Head(nn.Module):
    def __init__(self, gm, layout):
        super().__init__()
        self.gm = gm
        self.layout = layout

    def forward(self, a, *carry):
        k = self.layout.carried()
        return self.gm(self.layout.from_map(a, carry[:k]), *carry[k:])


class VitClassTokenHead(nn.Module):
    """A torchvision ViT after its last block's `ln_1`, for the class token alone.

    After the last block only the class token reaches the classifier, and everything in the
    block past the attention is token by token: so only the class token's query, its
    attention output and its MLP are needed. The keys and values still come from every token,
    so the gradient with respect to the map is the whole head's, at a fraction of its work
    (the general head runs the block for all 197 tokens). `carry` is (class token of ln_1's
    output, the block's input), as split_at gives them.
    """

    def __init__(self, net, layout):
        super().__init__()
        block = net.encoder.layers[-1]
        self.attn, self.dropout, self.ln_2, self.mlp = block.self_attention, block.dropout, block.ln_2, block.mlp
        self.ln, self.heads = net.encoder.ln, net.heads
        self.layout = layout

    def forward(self, a, lead, residual):
        y = self.layout.from_map(a, [lead])  # [B, 1 + h·w, C]: ln_1's output
        att = self.attn(y[:, :1], y, y, need_weights=False)[0]  # [B, 1, C]
        x = residual[:, :1] + self.dropout(att)
        x = x + self.mlp(self.ln_2(x))
        return self.heads(self.ln(x)[:, 0])


def faster_head(net, features, head, layout, size):
    """The class-token head in place of the general one for a ViT cut at its last `ln_1`, if it
    gives the same scores and the same gradient on a sample; else the general head."""
    try:
        fast = VitClassTokenHead(net, layout).eval()
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            out = features(x)
        a = out[0].detach().requires_grad_(True)
        s_fast, s_all = fast(a, *out[1:]), head(a, *out[1:])
        g_fast, = torch.autograd.grad(s_fast[:, 0].sum(), a)
        g_all, = torch.autograd.grad(s_all[:, 0].sum(), a)
        if torch.allclose(s_fast, s_all, atol=1e-4) and torch.allclose(g_fast, g_all, atol=1e-5, rtol=1e-3):
            return fast
    except Exception:  # noqa: BLE001 (not the torchvision ViT it looks like: keep the general head)
        pass
    return head



def one_line(e):
    """An exception as the one line that says what went wrong."""
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    return lines[0] if lines else type(e).__name__


def check_grid_matters(model, parts, layer):
    """Refuse a layer whose patch tokens the score does not depend on (a ViT's last norm, after
    which the class token alone is classified): its maps would all be flat. `parts`: what
    `features` gave, the map and the carried tensors."""
    if len(parts) == 1:
        return
    a = parts[0].detach().requires_grad_(True)
    carry = [c.detach().requires_grad_(c.is_floating_point()) for c in parts[1:]]
    logits = model.head(a, *carry)
    wrt = [a] + [c for c in carry if c.requires_grad]
    grads = torch.autograd.grad(logits.sum(), wrt, allow_unused=True)
    to_map = grads[0] is not None and bool(grads[0].any())
    elsewhere = any(g is not None and bool(g.any()) for g in grads[1:])
    if not to_map and elsewhere:
        raise ExportError(
            f"the scores do not depend on the map of --layer {layer!r} (after it, only the leading "
            "class tokens are used), so every map would be flat; pick a layer inside the last "
            "block, such as its first norm")


def unpin_devices(traced):
    """A trace keeps every `.to(device)` it saw with the device as a constant: Keras's moves of
    each tensor to the CPU would then move a GPU's tensors back to the CPU, and fail there. Such
    moves lose their device (a dtype change stays); any other op still naming a device is
    refused, since the model could not run on another one."""
    for name in ("features", "head", "forward"):
        g = getattr(traced, name).graph
        for node in g.findAllNodes("aten::to"):
            for i, v in enumerate(node.inputs()):
                if v.type().kind() == "DeviceObjType" and v.node().kind() == "prim::Constant":
                    with g.insert_point_guard(node):
                        none = g.insertConstant(None)
                    node.replaceInput(i, none)
        torch._C._jit_pass_dce(g)
        torch._C._jit_pass_lint(g)
        for n in g.findAllNodes("prim::Constant"):
            if n.output().type().kind() == "DeviceObjType" and n.output().uses():
                user = n.output().uses()[0].user
                # The innermost frame of the model's own code (not torch's, not fx's generated code).
                frames = [f for f in user.sourceRange().splitlines() if f.strip() and "/torch/" not in f
                          and "export_model.py" not in f and "gradcam_stream" not in f and not f.startswith("<eval_with_key>")]
                where = f" ({frames[0].strip()})" if frames else ""
                raise ExportError(f"the traced model fixes a device in `{user.kind()}`{where}, so it could "
                                  "not run on another device; create tensors on the input's device instead")



def write(traced, meta, out):
    """The model and its sidecar, each whole or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".pt.tmp")
    traced.save(str(tmp))
    sidecar = out.with_suffix(".json")
    sidecar.with_suffix(".json.tmp").write_text(json.dumps(meta, indent=1) + "\n")
    tmp.replace(out)
    sidecar.with_suffix(".json.tmp").replace(sidecar)



def trace(model, meta):
    """`model` (a `Split`) traced, frozen and checked against itself on a random batch: the
    TorchScript module gradcam-stream runs. `meta` gains the map's shape (`feature_shape`), the
    number of carried tensors (`carry`) and of classes (`num_classes`)."""
    with warnings.catch_warnings():
        # A ViT asserts its input size, which a trace keeps as a constant: the size is fixed
        # anyway. TorchScript is deprecated in favour of torch.export, which gradcam-stream's
        # libtorch cannot run.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return _trace(model, meta)


def _trace(model, meta):
    h, w = meta["input_size"]
    x = torch.rand(2, 3, h, w, device=device_of(model))
    with torch.no_grad():
        out = model.features(x)
        ref = model(x)
    parts = out if isinstance(out, tuple) else (out,)
    check_grid_matters(model, parts, meta["target_layer"])
    a = parts[0]
    try:
        # The methods are checked below, against the eager model; trace's own check compares
        # graph texts, which differ for fx modules in their names alone.
        traced = torch.jit.trace_module(model, {"forward": x, "features": x, "head": parts},
                                        check_trace=False)
        # Freezing inlines the weights and folds batch norms into the convolutions: about 30%
        # faster on CPU, and gradients with respect to the activations are unchanged.
        traced = torch.jit.freeze(traced.eval(), preserved_attrs=["features", "head"])
    except Exception as e:  # noqa: BLE001 (TorchScript raises many kinds)
        raise ExportError(f"cannot trace the model to TorchScript: {one_line(e)}") from e
    unpin_devices(traced)
    with torch.no_grad():
        got = traced.features(x)
        got = traced.head(*got) if isinstance(got, tuple) else traced.head(got)
    if not torch.allclose(got, ref, atol=1e-4):
        raise ExportError("the TorchScript model gives other scores than the model itself "
                          "(its forward depends on more than its input); export another layer or model")
    meta["feature_shape"] = list(a.shape[1:])
    meta["carry"] = len(parts) - 1
    meta["num_classes"] = int(ref.shape[1])
    if len(meta["classes"]) != meta["num_classes"]:
        raise ExportError(f"{len(meta['classes'])} class names for a model with {meta['num_classes']} "
                          "scores; give one name per class")
    return traced


def device_of(model):
    """Where the model's parameters are (the CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def layer_name(net, layer):
    """The module name of `layer`: a name as it is, or a submodule of `net` by identity."""
    if isinstance(layer, str):
        return layer
    if isinstance(layer, nn.Module):
        name = next((n for n, m in net.named_modules() if m is layer), None)
        if name is None or name == "":
            raise ExportError("the layer given is not a submodule of the model; give one of its "
                              "modules (model.layer4) or its name ('layer4')")
        return name
    raise ExportError(f"--layer must be a module name or a submodule, not {type(layer).__name__}")


def from_module(net, layer, input_size=(224, 224), classes=None, name=None, mean=IMAGENET_MEAN,
                std=IMAGENET_STD):
    """(split model, sidecar) of a live classifier `net` cut after `layer` (a module name or a
    submodule), for inputs of `input_size` (h, w). Class names: `classes`, else ImageNet's for
    1000 scores, else class0, class1, …"""
    layer = layer_name(net, layer)
    size = [int(input_size[0]), int(input_size[1])]
    net = net.eval()
    features, head, layout = split_at(net, layer, size, device_of(net))
    model = Split(features, head).eval()
    with torch.no_grad():
        k = model(torch.rand(1, 3, *size, device=device_of(net))).shape[1]
    if classes is None:
        classes = imagenet_classes() if k == 1000 else [f"class{i}" for i in range(k)]
    return model, {
        "name": name or type(net).__name__,
        "target_layer": layer,
        "layer_output": layout.describe(),
        "input_size": size,
        "mean": list(mean),
        "std": list(std),
        "classes": [str(c) for c in classes],
    }
