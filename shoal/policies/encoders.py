"""Per-leaf observation encoders, chosen from the observation layout, and the encoder of a whole flat row.

:class:`ObservationEncoder` unflattens a batch of flat rows (no copy, see :mod:`shoal.policies.unflatten`), runs
one encoder per leaf and concatenates their features. Float conversion happens here, inside the encoders, so
rollout buffers can keep observations in their compact native dtypes.

Which encoder a leaf gets (:func:`encoder_kind`)
    ``"image"``
        a ``uint8`` ``Box`` with 3 dims whose two spatial dims are both >= 8. Layout heuristic: channels-last
        (``HWC``, the Gymnasium convention) when the last dim is the smallest of the first and last
        (``shape[2] <= shape[0]``), channels-first (``CHW``) otherwise; ``(84, 84, 3)`` and ``(8, 8, 2)`` are
        ``HWC``, ``(4, 84, 84)`` is ``CHW``. Encoded by a small CNN (:class:`ImageEncoder`).
    ``"board"``
        a ``Box`` of 0/1 planes, ``(H, W, C)`` with an integer or bool dtype other than ``uint8``, bounds within
        ``[0, 1]`` and ``H, W >= 4``: the piece planes of PettingZoo's board games (connect four's ``(6, 7, 2)``
        int8, chess's ``(8, 8, 111)``, go's ``(N, N, 17)``). Encoded by 3x3 same-padding convolutions that keep
        every cell (:class:`BoardEncoder`): a line of stones is a local pattern, which an MLP over the flat board
        has to learn once per position. Smaller boards (tic-tac-toe's ``(3, 3, 2)``) stay ``"vector"``.
    ``"embedding"``
        ``Discrete``, ``MultiDiscrete`` and ``Text`` leaves, and integer ``Box`` leaves of codes (below): one
        learned vector per choice of each element (per character for Text), concatenated
        (:class:`EmbeddingEncoder`). Leaves with more than ``MAX_EMBEDDINGS`` choices in total fall back to
        ``"vector"``.
    ``"vector"``
        everything else: float, integer and bool ``Box`` leaves of any shape, ``MultiBinary``. Flattened, cast to
        ``float32``, scaled (below) and fed to ``Linear`` + ReLU or tanh (:class:`VectorEncoder`). ``MultiBinary``
        and bool leaves go in as 0/1 (a plain linear layer).

    Integer ``Box`` leaves of codes (:func:`is_code_grid`) are ``"embedding"`` leaves: at most
    :data:`MAX_CODE_ELEMENTS` elements that each take at most :data:`MAX_CODES` values (object ids 0..10 of a grid
    world), or a ``uint8`` grid with 3 dims too small for the CNN (a spatial side < 8, MiniGrid's 7x7x3
    object/colour/state ids, declared 0..255). Rescaling them as numbers put codes 0..10 of a 0..255 ``uint8`` Box
    into 4% of the input range, and a deterministic policy then walked into walls; each code gets its own vector.

    2-D integer "glyph-like" grids (NetHack's ``glyphs``, ``chars``, ``colors``...) are ``"vector"`` leaves: an
    embedding + CNN per cell costs 10-100x more per row than one linear layer, and the default policy should stay
    within a small factor of a plain MLP (``benchmarks/policies.py``). Put a custom encoder in front for them.

Scaling of ``"vector"`` leaves
    A Box whose every element has finite bounds with ``0 <= high - low <= 1e4`` is fed as is when its dtype is
    float (its bounds are limits such as velocity clamps, not the scale of its data), and rescaled affinely into
    ``[-1, 1]`` when it is an integer Box; the rescale is folded into the linear layer's weights (no extra pass
    over the data, same gradients as scaling the input). Any other Box goes through
    ``symlog(x) = sign(x) * log1p(|x|)``.

    With ``obs_norm`` (``Policy(obs_norm=True)``) float Box leaves are instead normalized by the running mean
    and variance of the observations trained on (:mod:`shoal.policies.obs_stats`, as SB3's ``VecNormalize``
    does): MountainCar-v0's velocity spans +-0.07, and fixed scaling left PPO behind SB3 there.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shoal.emulation.layout import Layout, Leaf, format_path
from shoal.errors import APIUsageError, SpaceError
from shoal.policies.obs_stats import RunningObsStats, check_moments
from shoal.policies.unflatten import RowReader

__all__ = [
    "ACTIVATIONS",
    "MAX_CODES",
    "MAX_CODE_ELEMENTS",
    "MAX_EMBEDDINGS",
    "BoardEncoder",
    "EmbeddingEncoder",
    "ImageEncoder",
    "ObservationEncoder",
    "VectorEncoder",
    "encoder_kind",
    "image_layout",
    "is_code_grid",
    "is_board",
    "leaf_scaling",
    "check_activation",
    "make_leaf_encoder",
    "normalizes",
    "scale_leaf",
]

MAX_EMBEDDINGS = 2**16
#: An integer Box is a leaf of codes (embedded) when each element takes at most this many values ...
MAX_CODES = 32
#: ... and it has at most this many elements (larger integer grids, e.g. NetHack's 21x79 maps, stay "vector":
#: an embedding per cell would cost far more per row than one linear layer).
MAX_CODE_ELEMENTS = 512
_AFFINE_SPAN = 1e4
_CHUNK_ELEMENTS = 2**22  # VectorEncoder converts at most this many elements at once (a 16 MiB float32 block)
_MIN_IMAGE_SIDE = 8
_MIN_BOARD_SIDE = 4


def image_layout(leaf: Leaf) -> str | None:
    """``"HWC"`` or ``"CHW"`` when ``leaf`` is image-like (see the module docstring), else None."""
    if leaf.kind != "box" or leaf.dtype != np.uint8 or len(leaf.shape) != 3:
        return None
    order = "HWC" if leaf.shape[2] <= leaf.shape[0] else "CHW"
    h, w = leaf.shape[:2] if order == "HWC" else leaf.shape[1:]
    return order if min(h, w) >= _MIN_IMAGE_SIDE else None


def _box_bounds(leaf: Leaf) -> tuple[np.ndarray, np.ndarray]:
    """Per-element ``(low, high)`` (flattened, float64) of a Box leaf."""
    low = np.broadcast_to(np.asarray(leaf.space.low, np.float64), leaf.shape).reshape(-1)
    high = np.broadcast_to(np.asarray(leaf.space.high, np.float64), leaf.shape).reshape(-1)
    return low, high


def is_code_grid(leaf: Leaf) -> bool:
    """True for an integer Box leaf whose values are codes, embedded per element (see the module docstring)."""
    if leaf.kind != "box" or not np.issubdtype(leaf.dtype, np.integer) or leaf.size > MAX_CODE_ELEMENTS:
        return False
    low, high = _box_bounds(leaf)
    if not (np.isfinite(low).all() and np.isfinite(high).all() and (high >= low).all()):
        return False
    if (high - low + 1 <= MAX_CODES).all():
        return True
    # too small for the CNN: a uint8 grid of ids (MiniGrid declares 0..255 for codes 0..10)
    return leaf.dtype == np.uint8 and len(leaf.shape) == 3 and image_layout(leaf) is None


def is_board(leaf: Leaf) -> bool:
    """``leaf`` holds the 0/1 piece planes of a board game (``(H, W, C)``, see the module docstring)."""
    if leaf.kind != "box" or len(leaf.shape) != 3 or leaf.dtype == np.uint8:
        return False
    if not (np.issubdtype(leaf.dtype, np.integer) or leaf.dtype == np.bool_):
        return False
    if min(leaf.shape[:2]) < _MIN_BOARD_SIDE:
        return False
    low, high = np.asarray(leaf.space.low), np.asarray(leaf.space.high)
    return bool((low >= 0).all() and (high <= 1).all())


def _choices(leaf: Leaf) -> tuple[np.ndarray, np.ndarray]:
    """``(n, start)`` per element (flattened) of a discrete-like leaf or an integer Box of codes."""
    space = leaf.space
    if leaf.kind == "box":
        low, high = _box_bounds(leaf)
        return (high - low + 1).astype(np.int64), low.astype(np.int64)
    if leaf.kind == "discrete":
        return np.array([space.n], np.int64), np.array([space.start], np.int64)
    if leaf.kind == "multi_discrete":
        return np.asarray(space.nvec, np.int64).reshape(-1), np.asarray(space.start, np.int64).reshape(-1)
    # text: code 0 is padding, 1..len(charset) are characters
    return np.full(leaf.size, len(space.character_list) + 1, np.int64), np.zeros(leaf.size, np.int64)


def encoder_kind(leaf: Leaf, boards: bool = True) -> str:
    """``"image" | "board" | "embedding" | "vector"``: the encoder the default policy uses for ``leaf``
    (``boards=False``: board leaves are ``"vector"``, as in policies saved before the board encoder existed).

    Raises:
        SpaceError: the leaf has no elements or an unknown kind (the message names its path and shape).
    """
    if leaf.size == 0:
        raise SpaceError(f"leaf {format_path(leaf.path)} has shape {leaf.shape} and no elements; the policy "
                         "cannot encode an empty leaf: drop it from the observation space")
    if leaf.kind in ("discrete", "multi_discrete", "text"):
        return "embedding" if int(_choices(leaf)[0].sum()) <= MAX_EMBEDDINGS else "vector"
    if leaf.kind == "box":
        if image_layout(leaf):
            return "image"
        if boards and is_board(leaf):
            return "board"
        return "embedding" if is_code_grid(leaf) and int(_choices(leaf)[0].sum()) <= MAX_EMBEDDINGS else "vector"
    if leaf.kind == "multi_binary":
        return "vector"
    raise SpaceError(f"leaf {format_path(leaf.path)} (shape {leaf.shape}, kind {leaf.kind!r}) has no encoder; "
                     "the default policy encodes box, discrete, multi_discrete, multi_binary and text leaves")


def _bounds(leaf: Leaf) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-element ``(low, high)`` (flattened, float64) of a leaf; None for 0/1 leaves."""
    if leaf.kind == "multi_binary" or leaf.dtype == np.bool_:
        return None
    if leaf.kind == "box":
        return _box_bounds(leaf)
    n, start = _choices(leaf)
    return start.astype(np.float64), (start + n - 1).astype(np.float64)


def leaf_scaling(leaf: Leaf) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """How a leaf's values are scaled before a linear layer: ``(mode, scale, shift)``.

    ``mode`` is ``"affine"`` (``x * scale + shift`` maps ``[low, high]`` onto ``[-1, 1]``; per-element float64
    arrays), ``"symlog"`` (``sign(x) * log1p(|x|)``; unbounded or wide leaves) or ``"none"`` (0/1 leaves).
    """
    bounds = _bounds(leaf)
    if bounds is None:
        return "none", None, None
    low, high = bounds
    span = high - low
    if not (np.isfinite(low).all() and np.isfinite(high).all() and ((span >= 0) & (span <= _AFFINE_SPAN)).all()):
        return "symlog", None, None
    if np.issubdtype(leaf.dtype, np.floating):
        # A float Box's bounds are limits (clamps, physical ranges), not the scale of its data: Acrobot's velocities
        # are bounded by +-4pi/+-9pi but have a std of 1.3/2.2, so [low, high] -> [-1, 1] shrank them 10-30x
        # below the other inputs. Feed them as they are (as CleanRL and SB3 do).
        return "none", None, None
    half = span / 2
    scale = np.divide(1.0, half, out=np.zeros_like(half), where=half > 0)
    return "affine", scale, -(low + half) * scale


def normalizes(leaf: Leaf) -> bool:
    """True for the leaves running observation normalization applies to: float ``Box`` leaves the default
    policy encodes as vectors (integer, bool and 0/1 leaves keep their fixed scaling)."""
    return leaf.kind == "box" and np.issubdtype(leaf.dtype, np.floating) and encoder_kind(leaf) == "vector"


def scale_leaf(leaf: Leaf, x: Tensor) -> Tensor:
    """float32 ``[*batch, leaf.size]``: the leaf's values ``x [*batch, *leaf.shape]`` scaled by
    :func:`leaf_scaling` (a copy; encoders fold the affine case into their weights instead)."""
    mode, scale, shift = leaf_scaling(leaf)
    x = x.reshape(*x.shape[: x.dim() - len(leaf.shape)], leaf.size).to(torch.float32)
    if mode == "affine":
        return x * torch.as_tensor(scale, dtype=torch.float32, device=x.device) + torch.as_tensor(
            shift, dtype=torch.float32, device=x.device)
    if mode == "symlog":
        return torch.sign(x) * torch.log1p(torch.abs(x))
    return x


def _init_linear(layer: nn.Linear | nn.Conv2d, gain: float = math.sqrt(2)) -> None:
    nn.init.orthogonal_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


#: Names of the hidden-layer activations of the default networks (``Policy(activation=...)``).
ACTIVATIONS: tuple[str, ...] = ("relu", "tanh")


def check_activation(name: str) -> None:
    """Raise :class:`~shoal.errors.APIUsageError` unless ``name`` is one of :data:`ACTIVATIONS`."""
    if name not in ACTIVATIONS:
        raise APIUsageError(f"activation={name!r} is unknown; valid choices: {list(ACTIVATIONS)}")


class VectorEncoder(nn.Module):
    """``Linear`` and an activation (ReLU by default) over a flattened leaf cast to float32, with the leaf's
    scaling (module docstring); with ``normalize`` a float leaf is normalized by running statistics instead
    (:class:`~shoal.policies.obs_stats.RunningObsStats`, in ``obs_stats``; mode ``"running"``).

    Input: ``[N, *leaf.shape]`` of any real or bool dtype. Output: float32 ``[N, out_features]``.
    """

    def __init__(self, leaf: Leaf, out_features: int, activation: str = "relu", normalize: bool = False) -> None:
        super().__init__()
        check_activation(activation)
        self.activation = activation
        self.path = leaf.path
        self.in_features = leaf.size
        self.out_features = out_features
        self.linear = nn.Linear(leaf.size, out_features)
        _init_linear(self.linear)
        self.mode, scale, shift = leaf_scaling(leaf)
        self.obs_stats: RunningObsStats | None = None
        if normalize and normalizes(leaf):
            self.mode = "running"
            self.obs_stats = RunningObsStats(leaf.size)
        if self.mode == "affine":
            self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32), persistent=False)
            self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        x = x.reshape(n, self.in_features)
        weight, bias = self.linear.weight, self.linear.bias
        if self.mode == "affine":
            weight, bias = weight * self.scale, torch.addmv(bias, weight, self.shift)
        step = max(1, _CHUNK_ELEMENTS // self.in_features)
        if n <= step or torch.compiler.is_compiling():
            return self._encode(x, weight, bias)
        # Large eager batches: convert and multiply a block of rows at a time, so the float32 copy of the input
        # stays small (reused memory instead of fresh page-faulting allocations; ~1.3x faster on big leaves).
        return torch.cat([self._encode(x[i : i + step], weight, bias) for i in range(0, n, step)])

    def _encode(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        x = x.to(torch.float32)
        if self.mode == "symlog":
            x = torch.sign(x) * torch.log1p(torch.abs(x))
        elif self.obs_stats is not None:
            x = self.obs_stats(x)
        if self.activation == "tanh":
            return torch.tanh(F.linear(x, weight, bias))
        return F.relu(F.linear(x, weight, bias), inplace=True)


class ImageEncoder(nn.Module):
    """A small CNN for a ``uint8`` image leaf; the input scaling ``1/high`` (``1/255`` for a full-range image,
    ``1/10`` for one declared 0..10) is folded into the first conv.

    Layers by the smaller spatial side ``s``: ``s >= 36``: the Nature-DQN stack (8x8/4, 4x4/2, 3x3/1; 32-64-64
    channels); ``16 <= s < 36``: two 3x3 stride-2 convs (32, 64); ``8 <= s < 16``: two 3x3 stride-1 convs (32, 64).
    Then ``Linear(flat, out_features) + ReLU``.

    Input: uint8 ``[N, H, W, C]`` or ``[N, C, H, W]`` (see :func:`image_layout`). Output: float32
    ``[N, out_features]``.
    """

    def __init__(self, leaf: Leaf, out_features: int) -> None:
        super().__init__()
        order = image_layout(leaf)
        if order is None:
            raise SpaceError(f"leaf {format_path(leaf.path)} with shape {leaf.shape} and dtype {leaf.dtype} is not "
                             f"image-like: expected uint8 with shape (H, W, C) or (C, H, W), H and W >= 8")
        self.channels_last = order == "HWC"
        h, w, c = leaf.shape if self.channels_last else (*leaf.shape[1:], leaf.shape[0])
        side = min(h, w)
        if side >= 36:
            spec = [(32, 8, 4, 0), (64, 4, 2, 0), (64, 3, 1, 0)]
        elif side >= 16:
            spec = [(32, 3, 2, 1), (64, 3, 2, 1)]
        else:
            spec = [(32, 3, 1, 1), (64, 3, 1, 1)]
        convs = []
        for channels, kernel, stride, pad in spec:
            conv = nn.Conv2d(c, channels, kernel, stride, pad)
            _init_linear(conv)
            convs.append(conv)
            c = channels
            h, w = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
        self.convs = nn.ModuleList(convs)
        self.linear = nn.Linear(c * h * w, out_features)
        _init_linear(self.linear)
        self.out_features = out_features
        high = float(np.max(leaf.space.high))
        self.input_scale = 1.0 / high if 0 < high < 255 else 1.0 / 255.0  # what its bounds say a value means

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        x = x.to(torch.float32)
        first = self.convs[0]
        x = F.relu(F.conv2d(x, first.weight * self.input_scale, first.bias, first.stride, first.padding))
        for conv in self.convs[1:]:
            x = F.relu(conv(x))
        return F.relu(self.linear(x.reshape(x.shape[0], -1)))


class BoardEncoder(nn.Module):
    """Board planes (``"board"`` leaves): two 3x3 same-padding convolutions (``channels`` each, ReLU) that keep
    the board's size, then ``Linear(channels * H * W, out_features) + ReLU``.

    Input: ``[N, H, W, C]`` 0/1 planes (any integer or bool dtype). Output: float32 ``[N, out_features]``.
    """

    def __init__(self, leaf: Leaf, out_features: int, channels: int = 32) -> None:
        super().__init__()
        if not is_board(leaf):
            raise SpaceError(f"leaf {format_path(leaf.path)} with shape {leaf.shape} and dtype {leaf.dtype} is not a "
                             f"board: expected 0/1 planes (H, W, C) of an integer dtype, H and W >= {_MIN_BOARD_SIDE}")
        h, w, c = leaf.shape
        self.convs = nn.ModuleList([nn.Conv2d(c, channels, 3, 1, 1), nn.Conv2d(channels, channels, 3, 1, 1)])
        for conv in self.convs:
            _init_linear(conv)
        self.linear = nn.Linear(channels * h * w, out_features)
        _init_linear(self.linear)
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 3, 1, 2).to(torch.float32)
        for conv in self.convs:
            x = F.relu(conv(x))
        return F.relu(self.linear(x.reshape(x.shape[0], -1)))


class EmbeddingEncoder(nn.Module):
    """One learned vector per choice of each element of a ``Discrete``/``MultiDiscrete``/``Text`` leaf or an
    integer ``Box`` of codes (:func:`is_code_grid`; its choices are ``low..high``).

    All elements share one table with per-element offsets; values outside the space are clamped into it.

    Input: integer ``[N, *leaf.shape]`` (``Discrete`` values include the space's ``start``). Output: float32
    ``[N, k * embedding_dim]`` for ``k`` elements.
    """

    def __init__(self, leaf: Leaf, embedding_dim: int) -> None:
        super().__init__()
        n, start = _choices(leaf)
        self.k = int(n.size)
        offsets = np.concatenate([[0], np.cumsum(n)[:-1]])
        self.register_buffer("low", torch.as_tensor(start, dtype=torch.long), persistent=False)
        self.register_buffer("high", torch.as_tensor(start + n - 1, dtype=torch.long), persistent=False)
        self.register_buffer("offset", torch.as_tensor(offsets - start, dtype=torch.long), persistent=False)
        self.embedding = nn.Embedding(int(n.sum()), embedding_dim)
        nn.init.normal_(self.embedding.weight, std=1.0)
        self.out_features = self.k * embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], self.k).to(torch.long)
        index = torch.minimum(torch.maximum(x, self.low), self.high) + self.offset
        return self.embedding(index).reshape(x.shape[0], self.out_features)


def make_leaf_encoder(leaf: Leaf, *, hidden_size: int = 128, embedding_dim: int = 16,
                      boards: bool = True, activation: str = "relu", obs_norm: bool = False) -> nn.Module:
    """The encoder for ``leaf`` (:func:`encoder_kind`); it has an ``out_features`` attribute.

    Vector and image leaves get ``hidden_size`` features (a vector leaf's ``Linear`` + activation is the policy's
    first hidden layer: narrower, it is a bottleneck; 16 units for Acrobot's 6 inputs kept PPO from learning).
    ``activation`` is that of vector leaves (:data:`ACTIVATIONS`); image and board CNNs keep ReLU. ``obs_norm``:
    float vector leaves are normalized by running statistics (:func:`normalizes`).
    """
    kind = encoder_kind(leaf, boards)
    if kind == "image":
        return ImageEncoder(leaf, hidden_size)
    if kind == "board":
        return BoardEncoder(leaf, hidden_size)
    if kind == "embedding":
        return EmbeddingEncoder(leaf, embedding_dim)
    return VectorEncoder(leaf, hidden_size, activation, normalize=obs_norm)


class ObservationEncoder(nn.Module):
    """Encode flat observation rows leaf by leaf and concatenate the features.

    Args:
        layout: the observation layout (``env.obs_layout``).
        hidden_size: width of image and vector leaf features (see :func:`make_leaf_encoder`).
        embedding_dim: width of one embedding vector.
        boards: encode board leaves with :class:`BoardEncoder` (False: as vectors).
        activation: activation of the vector leaves' layers (:data:`ACTIVATIONS`).
        obs_norm: normalize float vector leaves by running statistics (:meth:`observation_moments`,
            :meth:`update_observation_stats`).

    Input: ``[N, flat_size]`` rows of the layout's flat dtype. Output: float32 ``[N, out_features]``.

    Attributes:
        portable: decode byte rows arithmetically instead of by ``view(dtype)`` (set while exporting to ONNX).
        kinds: leaf name -> encoder kind, for inspection.
    """

    def __init__(self, layout: Layout, *, hidden_size: int = 128, embedding_dim: int = 16,
                 boards: bool = True, activation: str = "relu", obs_norm: bool = False) -> None:
        super().__init__()
        self.layout = layout
        self.reader = RowReader(layout)
        self.leaf_encoders = nn.ModuleList(
            make_leaf_encoder(leaf, hidden_size=hidden_size, embedding_dim=embedding_dim, boards=boards,
                              activation=activation, obs_norm=obs_norm)
            for leaf in layout.leaves
        )
        self._stats = [(i, enc.obs_stats) for i, enc in enumerate(self.leaf_encoders)
                       if getattr(enc, "obs_stats", None) is not None]
        self.kinds = {leaf.name: encoder_kind(leaf, boards) for leaf in layout.leaves}
        self.out_features = sum(enc.out_features for enc in self.leaf_encoders)
        self.portable = False

    def forward(self, obs: Tensor) -> Tensor:
        leaves = self.reader.read(obs, portable=self.portable)
        features = [enc(x) for enc, x in zip(self.leaf_encoders, leaves, strict=True)]
        return features[0] if len(features) == 1 else torch.cat(features, -1)

    @property
    def normalizes(self) -> bool:
        """Some leaf is normalized by running statistics."""
        return bool(self._stats)

    @torch.no_grad()
    def observation_moments(self, obs: Tensor) -> Tensor:
        """float64 ``[K]``: the moments of flat rows ``obs [N, flat_size]`` for every normalized leaf
        (:meth:`RunningObsStats.moments <shoal.policies.obs_stats.RunningObsStats.moments>`, concatenated; empty
        when nothing is normalized). Moments of several batches (or learners) add up."""
        if not self._stats:
            return torch.zeros(0, dtype=torch.float64, device=obs.device)
        leaves = self.reader.read(obs)
        return torch.cat([stats.moments(leaves[i]) for i, stats in self._stats])

    @torch.no_grad()
    def update_observation_stats(self, moments: Tensor) -> None:
        """Fold :meth:`observation_moments` (summed over batches or learners) into every normalized leaf's
        statistics."""
        expected = sum(1 + 2 * stats.size for _, stats in self._stats)
        if moments.numel() != expected:
            raise APIUsageError(f"observation moments have {moments.numel()} values; this encoder's normalized "
                                f"leaves take {expected} (pass the sum of observation_moments of the same policy)")
        check_moments(moments)  # before any leaf takes them: all or nothing
        start = 0
        for _, stats in self._stats:
            width = 1 + 2 * stats.size
            stats.merge(moments[start : start + width])
            start += width
