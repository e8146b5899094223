"""Data augmentation for optical-flow samples, as in FlowNet / FlowNet 2.0, on torch tensors.

:class:`FlowAugmentation` works on a sample dict (``image1``, ``image2`` ``(3, H, W)``, ``flow``
``(2, H, W)``, ``valid``/``occlusion`` ``(H, W)``) or on a batch of them (a leading batch dimension, as
the default collate makes); every step is vectorised over the batch.

Geometry. Each output pixel ``o`` of frame 1 is sampled from the input at ``s1 = A1(o)`` and each output
pixel of frame 2 at ``A2(o)``, where ``A1`` combines translation, rotation, scaling (zoom), the crop and
optional flips, and ``A2 = A1 ∘ R`` adds a small *relative* transform ``R`` for the second frame. The flow
is transformed exactly: the point ``s1`` moves to ``s1 + F(s1)`` in input frame 2, which is
``A2⁻¹(s1 + F(s1))`` in output frame 2, so::

    flow'(o) = A2⁻¹(A1(o) + F(A1(o))) - o

and warping the augmented ``image2`` with the augmented flow reproduces the augmented ``image1`` wherever
the original pair was consistent. As in the Caffe implementation, transforms whose crop would leave the
input image are rejected and redrawn (a batch of candidates per sample; if none fits, a centred crop at
the smallest zoom that fits is used), so outputs never contain padding.

Sampling: images and dense flow bilinearly; a sample whose ``valid`` mask is not all True (KITTI, NaNs)
has its flow and mask sampled nearest-neighbour so that invalid pixels never leak into valid ones.
``valid`` of a dense sample stays True only where all four bilinear neighbours were valid. ``occlusion``
is sampled nearest-neighbour and, because it means "not visible in frame 2", additionally marks pixels
whose transformed target falls outside the output frame 2.

Photometric changes (on 0..1 intensities, in this order): per-channel multiplicative colour and
multiplicative brightness, contrast about the image's mean grey level, additive brightness, clamp,
gamma, additive Gaussian noise, clamp; they never touch the flow. Frame 2 uses the same parameters
perturbed by small relative changes (``photometric_relative`` scales them; 0 gives identical
parameters); the noise is drawn independently per pixel and frame.

Defaults follow the FlowNet papers: translation ±20 % of the image size, rotation ±17°, zoom 0.9–2.0,
Gaussian noise σ ∈ [0, 0.04], contrast ∈ [-0.8, 0.4], multiplicative colour ∈ [0.5, 2] per channel,
gamma ∈ [0.7, 1.5], additive brightness ~ N(0, 0.2). The relative frame-2 transform (±0.375 % translation,
zoom 0.985–1.015, ±1° rotation) follows public FlowNet 2.0 training configurations; the paper gives no
numbers for it. Flips are off by default (the paper does not use them).

Randomness comes from a ``torch.Generator`` when one is passed (deterministic), else from torch's
global generator (which ``DataLoader`` seeds differently in every worker).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CenterCrop", "Compose", "FlowAugmentation", "Resize"]

Sample = dict[str, Any]
_SPATIAL_KEYS = ("image1", "image2", "flow", "valid", "occlusion")


# --------------------------------------------------------------------------------------------- helpers


def _batched(sample: Sample) -> tuple[Sample, bool]:
    """Return ``sample`` with a leading batch dimension on its tensors, and whether it had one."""
    image = sample.get("image1")
    if not isinstance(image, Tensor) or image.dim() not in (3, 4):
        raise ValueError("a sample needs 'image1' as a (3, H, W) or (B, 3, H, W) tensor")
    if image.dim() == 4:
        return sample, True
    out = dict(sample)
    for key in _SPATIAL_KEYS:
        if isinstance(out.get(key), Tensor):
            out[key] = out[key].unsqueeze(0)
    return out, False


def _unbatched(sample: Sample, was_batched: bool) -> Sample:
    if was_batched:
        return sample
    out = dict(sample)
    for key in _SPATIAL_KEYS:
        if isinstance(out.get(key), Tensor):
            out[key] = out[key].squeeze(0)
    return out


def _check_sizes(sample: Sample) -> tuple[int, int, int]:
    batch, _, height, width = sample["image1"].shape
    for key in _SPATIAL_KEYS:
        value = sample.get(key)
        if isinstance(value, Tensor) and (
            value.shape[0] != batch or tuple(value.shape[-2:]) != (height, width)
        ):
            raise ValueError(
                f"sample['{key}'] has shape {tuple(value.shape)}, which does not match image1 "
                f"{tuple(sample['image1'].shape)}"
            )
    return batch, height, width


def _uniform(generator: torch.Generator | None, shape: Sequence[int], lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(tuple(shape), generator=generator, dtype=torch.float64)


def _log_uniform(generator: torch.Generator | None, shape: Sequence[int], lo: float, hi: float) -> Tensor:
    return torch.exp(_uniform(generator, shape, math.log(lo), math.log(hi)))


def _affine(
    scale: Tensor,
    angle: Tensor,
    tx: Tensor,
    ty: Tensor,
    cx_in: float,
    cy_in: float,
    cx_out: float,
    cy_out: float,
) -> Tensor:
    """3x3 matrices ``o -> c_in + t + Rot(angle) · (o - c_out) / scale`` for tensors of any shape."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero, one = torch.zeros_like(cos), torch.ones_like(cos)
    ox = cx_in + tx - (cos * cx_out - sin * cy_out)
    oy = cy_in + ty - (sin * cx_out + cos * cy_out)
    rows = [
        torch.stack([cos, -sin, ox], -1),
        torch.stack([sin, cos, oy], -1),
        torch.stack([zero, zero, one], -1),
    ]
    return torch.stack(rows, -2)


def _flip_matrix(hflip: Tensor, vflip: Tensor, width: int, height: int) -> Tensor:
    """3x3 matrices of the optional horizontal/vertical flips of the output, shape ``hflip.shape + (3, 3)``."""
    sx = 1.0 - 2.0 * hflip.to(torch.float64)
    sy = 1.0 - 2.0 * vflip.to(torch.float64)
    zero, one = torch.zeros_like(sx), torch.ones_like(sx)
    rows = [
        torch.stack([sx, zero, hflip.to(torch.float64) * (width - 1)], -1),
        torch.stack([zero, sy, vflip.to(torch.float64) * (height - 1)], -1),
        torch.stack([zero, zero, one], -1),
    ]
    return torch.stack(rows, -2)


def _grid(matrices: Tensor, out_h: int, out_w: int, in_h: int, in_w: int, device: torch.device) -> Tensor:
    """Input pixel coordinates ``A(o)`` of every output pixel, ``(B, h, w, 2)`` float32 (x, y)."""
    mats = matrices.to(device=device, dtype=torch.float32)
    ys = torch.arange(out_h, dtype=torch.float32, device=device).view(1, out_h, 1)
    xs = torch.arange(out_w, dtype=torch.float32, device=device).view(1, 1, out_w)
    px = mats[:, 0, 0, None, None] * xs + mats[:, 0, 1, None, None] * ys + mats[:, 0, 2, None, None]
    py = mats[:, 1, 0, None, None] * xs + mats[:, 1, 1, None, None] * ys + mats[:, 1, 2, None, None]
    return torch.stack([px, py], dim=-1)


def _normalise(coords: Tensor, in_h: int, in_w: int) -> Tensor:
    """Pixel coordinates to grid_sample's [-1, 1] (align_corners=True)."""
    gx = coords[..., 0] * (2.0 / max(in_w - 1, 1)) - 1.0
    gy = coords[..., 1] * (2.0 / max(in_h - 1, 1)) - 1.0
    return torch.stack([gx, gy], dim=-1)


def _sample(data: Tensor, grid: Tensor, mode: str, padding: str = "zeros") -> Tensor:
    return F.grid_sample(data, grid, mode=mode, padding_mode=padding, align_corners=True)


# ---------------------------------------------------------------------------------------- augmentation


class FlowAugmentation:
    """Random geometric + photometric augmentation of flow samples (FlowNet 2.0 style).

    Args:
        crop_size: output ``(height, width)``; each must be a multiple of ``multiple_of``.
        translate: translation range as a fraction of the input size, ``U(-t, t)`` in x and y.
        rotate: rotation range in degrees, ``U(-r, r)``.
        scale: zoom range ``(lo, hi)``, log-uniform; > 1 enlarges the content.
        relative_translate, relative_rotate, relative_scale: the extra transform of frame 2 (fraction of the
            input size, degrees, zoom range).
        hflip_prob, vflip_prob: probabilities of horizontal/vertical flips (both frames and the flow).
        geometric_prob: probability of the translate/rotate/zoom/relative transform; otherwise a plain
            random crop (plus flips) is taken.
        noise_std: range of the Gaussian noise's σ (on 0..1 intensities), uniform.
        contrast: range of the contrast change ``c`` (``x -> (x - mean)(1 + c) + mean``), uniform.
        brightness_std: σ of the additive brightness change (0..1 intensities).
        brightness_scale: multiplicative brightness range, log-uniform (``(1, 1)`` disables it).
        color: per-channel multiplicative colour range, log-uniform.
        gamma: gamma range, log-uniform.
        photometric_prob: probability of the photometric changes (per sample).
        photometric_relative: scale of the small frame-2 perturbations of the photometric parameters
            (0: both frames get exactly the same change, apart from the noise).
        sparse_nearest: sample flow/valid nearest-neighbour for samples with invalid pixels.
        max_tries: geometric candidates drawn per sample before falling back to a centred crop.
        multiple_of: required divisor of the crop size (64 for the FlowNet family).
    """

    def __init__(
        self,
        crop_size: tuple[int, int] = (320, 448),
        *,
        translate: float = 0.2,
        rotate: float = 17.0,
        scale: tuple[float, float] = (0.9, 2.0),
        relative_translate: float = 0.00375,
        relative_rotate: float = 1.0,
        relative_scale: tuple[float, float] = (0.985, 1.015),
        hflip_prob: float = 0.0,
        vflip_prob: float = 0.0,
        geometric_prob: float = 1.0,
        noise_std: tuple[float, float] = (0.0, 0.04),
        contrast: tuple[float, float] = (-0.8, 0.4),
        brightness_std: float = 0.2,
        brightness_scale: tuple[float, float] = (1.0, 1.0),
        color: tuple[float, float] = (0.5, 2.0),
        gamma: tuple[float, float] = (0.7, 1.5),
        photometric_prob: float = 1.0,
        photometric_relative: float = 1.0,
        sparse_nearest: bool = True,
        max_tries: int = 16,
        multiple_of: int = 64,
    ) -> None:
        h, w = int(crop_size[0]), int(crop_size[1])
        if h <= 0 or w <= 0 or (multiple_of > 1 and (h % multiple_of or w % multiple_of)):
            raise ValueError(f"crop_size must be positive multiples of {multiple_of}, got {crop_size}")
        for name, pair in (
            ("scale", scale),
            ("relative_scale", relative_scale),
            ("color", color),
            ("gamma", gamma),
            ("brightness_scale", brightness_scale),
        ):
            if not 0 < pair[0] <= pair[1]:
                raise ValueError(f"{name} must be (lo, hi) with 0 < lo <= hi, got {pair}")
        for name, prob in (
            ("hflip_prob", hflip_prob),
            ("vflip_prob", vflip_prob),
            ("geometric_prob", geometric_prob),
            ("photometric_prob", photometric_prob),
        ):
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {prob}")
        if contrast[0] > contrast[1] or contrast[0] <= -1.0:
            raise ValueError(f"contrast must be (lo, hi) with -1 < lo <= hi, got {contrast}")
        if not 0 <= noise_std[0] <= noise_std[1]:
            raise ValueError(f"noise_std must be (lo, hi) with 0 <= lo <= hi, got {noise_std}")
        self.crop_size = (h, w)
        self.translate = float(translate)
        self.rotate = float(rotate)
        self.scale = (float(scale[0]), float(scale[1]))
        self.relative_translate = float(relative_translate)
        self.relative_rotate = float(relative_rotate)
        self.relative_scale = (float(relative_scale[0]), float(relative_scale[1]))
        self.hflip_prob = float(hflip_prob)
        self.vflip_prob = float(vflip_prob)
        self.geometric_prob = float(geometric_prob)
        self.noise_std = (float(noise_std[0]), float(noise_std[1]))
        self.contrast = (float(contrast[0]), float(contrast[1]))
        self.brightness_std = float(brightness_std)
        self.brightness_scale = (float(brightness_scale[0]), float(brightness_scale[1]))
        self.color = (float(color[0]), float(color[1]))
        self.gamma = (float(gamma[0]), float(gamma[1]))
        self.photometric_prob = float(photometric_prob)
        self.photometric_relative = float(photometric_relative)
        self.sparse_nearest = bool(sparse_nearest)
        self.max_tries = max(1, int(max_tries))

    def __repr__(self) -> str:
        return (
            f"FlowAugmentation(crop_size={self.crop_size}, translate={self.translate}, rotate={self.rotate}, "
            f"scale={self.scale}, hflip_prob={self.hflip_prob}, vflip_prob={self.vflip_prob}, "
            f"photometric_prob={self.photometric_prob})"
        )

    # -------------------------------------------------------------------------------------- public

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        """Augment one sample (``(3, H, W)`` images) or a batch (``(B, 3, H, W)``); returns a new dict.

        Keys other than image1/image2/flow/valid/occlusion are passed through unchanged.
        """
        batch, was_batched = _batched(sample)
        out = self.geometric(batch, generator)
        out = self.photometric(out, generator)
        return _unbatched(out, was_batched)

    def sample_transforms(
        self, batch: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw ``(A1, A2)``: ``(batch, 3, 3)`` float64 maps from output pixel coordinates (crop) to input
        pixel coordinates of frame 1 and frame 2, each keeping the crop inside the input image."""
        h, w = self.crop_size
        k = self.max_tries
        g = generator
        cx_in, cy_in, cx_out, cy_out = (width - 1) / 2, (height - 1) / 2, (w - 1) / 2, (h - 1) / 2
        shape = (batch, k)
        geometric = torch.rand(batch, generator=g, dtype=torch.float64) < self.geometric_prob
        hflip = torch.rand(batch, generator=g, dtype=torch.float64) < self.hflip_prob
        vflip = torch.rand(batch, generator=g, dtype=torch.float64) < self.vflip_prob
        zoom = _log_uniform(g, shape, *self.scale)
        angle = _uniform(g, shape, -1.0, 1.0) * math.radians(self.rotate)
        tx = _uniform(g, shape, -1.0, 1.0) * (self.translate * width)
        ty = _uniform(g, shape, -1.0, 1.0) * (self.translate * height)
        rel_zoom = _log_uniform(g, shape, *self.relative_scale)
        rel_angle = _uniform(g, shape, -1.0, 1.0) * math.radians(self.relative_rotate)
        rel_tx = _uniform(g, shape, -1.0, 1.0) * (self.relative_translate * width)
        rel_ty = _uniform(g, shape, -1.0, 1.0) * (self.relative_translate * height)
        crop_x = _uniform(g, shape, -0.5, 0.5) * max(width - w, 0)
        crop_y = _uniform(g, shape, -0.5, 0.5) * max(height - h, 0)
        # Samples without the geometric transform: a plain random crop.
        plain = ~geometric[:, None].expand(shape)
        one, zero = torch.ones_like(zoom), torch.zeros_like(zoom)
        zoom, angle = torch.where(plain, one, zoom), torch.where(plain, zero, angle)
        tx, ty = torch.where(plain, crop_x, tx), torch.where(plain, crop_y, ty)
        rel_zoom, rel_angle = torch.where(plain, one, rel_zoom), torch.where(plain, zero, rel_angle)
        rel_tx, rel_ty = torch.where(plain, zero, rel_tx), torch.where(plain, zero, rel_ty)

        flips = _flip_matrix(hflip, vflip, w, h)[:, None]  # (B, 1, 3, 3)
        a1 = _affine(zoom, angle, tx, ty, cx_in, cy_in, cx_out, cy_out) @ flips
        relative = _affine(rel_zoom, rel_angle, rel_tx, rel_ty, cx_out, cy_out, cx_out, cy_out)
        a2 = a1 @ relative
        corners = torch.tensor(
            [[0.0, 0.0, 1.0], [w - 1.0, 0.0, 1.0], [0.0, h - 1.0, 1.0], [w - 1.0, h - 1.0, 1.0]],
            dtype=torch.float64,
        ).T  # (3, 4)
        eps = 1e-6
        ok = torch.ones(shape, dtype=torch.bool)
        for mats in (a1, a2):
            pts = mats[..., :2, :] @ corners  # (B, K, 2, 4)
            ok &= (pts[..., 0, :] >= -eps).all(-1) & (pts[..., 0, :] <= width - 1 + eps).all(-1)
            ok &= (pts[..., 1, :] >= -eps).all(-1) & (pts[..., 1, :] <= height - 1 + eps).all(-1)
        # First fitting candidate per sample; a centred crop at the smallest fitting zoom otherwise.
        first = torch.argmax(ok.to(torch.int64), dim=1)
        found = ok.any(dim=1)
        rows = torch.arange(batch)
        a1_pick, a2_pick = a1[rows, first], a2[rows, first]
        fit = max(1.0, (h - 1) / max(height - 1, 1), (w - 1) / max(width - 1, 1))
        fallback = (
            _affine(
                torch.full((batch,), fit * (1 + 1e-9), dtype=torch.float64),
                torch.zeros(batch, dtype=torch.float64),
                torch.zeros(batch, dtype=torch.float64),
                torch.zeros(batch, dtype=torch.float64),
                cx_in,
                cy_in,
                cx_out,
                cy_out,
            )
            @ flips[:, 0]
        )
        keep = found[:, None, None]
        return torch.where(keep, a1_pick, fallback), torch.where(keep, a2_pick, fallback)

    def geometric(self, batch: Sample, generator: torch.Generator | None = None) -> Sample:
        """The geometric part alone, on a batched sample dict."""
        n, height, width = _check_sizes(batch)
        a1, a2 = self.sample_transforms(n, height, width, generator)
        return apply_transforms(batch, a1, a2, self.crop_size, sparse_nearest=self.sparse_nearest)

    def photometric(self, batch: Sample, generator: torch.Generator | None = None) -> Sample:
        """The photometric part alone, on a batched sample dict (images only; the flow is untouched)."""
        image1, image2 = batch["image1"], batch["image2"]
        n = image1.shape[0]
        g = generator
        apply = (torch.rand(n, generator=g, dtype=torch.float64) < self.photometric_prob).to(torch.float64)
        rel = self.photometric_relative

        def draw() -> dict[str, Tensor]:
            return {
                "color": torch.log(_log_uniform(g, (n, 3), *self.color)),
                "scale": torch.log(_log_uniform(g, (n, 1), *self.brightness_scale)),
                "contrast": _uniform(g, (n, 1), *self.contrast),
                "brightness": torch.randn((n, 1), generator=g, dtype=torch.float64) * self.brightness_std,
                "gamma": torch.log(_log_uniform(g, (n, 1), *self.gamma)),
                "noise": _uniform(g, (n, 1), *self.noise_std),
            }

        first = draw()
        # Frame 2: small perturbations of frame 1's parameters (log-space for the multiplicative ones).
        second = {
            "color": first["color"] + _uniform(g, (n, 3), -0.02, 0.02) * rel,
            "scale": first["scale"] + _uniform(g, (n, 1), -0.02, 0.02) * rel,
            "contrast": first["contrast"] + _uniform(g, (n, 1), -0.02, 0.02) * rel,
            "brightness": first["brightness"]
            + torch.randn((n, 1), generator=g, dtype=torch.float64) * 0.01 * rel,
            "gamma": first["gamma"] + _uniform(g, (n, 1), -0.02, 0.02) * rel,
            "noise": first["noise"],
        }
        out = dict(batch)
        out["image1"] = self._photometric_one(image1, first, apply, g)
        out["image2"] = self._photometric_one(image2, second, apply, g)
        return out

    @staticmethod
    def _photometric_one(
        image: Tensor, params: dict[str, Tensor], apply: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        n = image.shape[0]
        dev = image.device

        def per_sample(value: Tensor) -> Tensor:  # (n, c) -> (n, c, 1, 1), identity where not applied
            return (value * apply.view(n, *([1] * (value.dim() - 1)))).to(device=dev, dtype=torch.float32)[
                ..., None, None
            ]

        x = image.to(torch.float32) * (1.0 / 255.0)
        x = x * torch.exp(per_sample(params["color"]) + per_sample(params["scale"]))
        grey = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - grey) * (1.0 + per_sample(params["contrast"])) + grey
        x = (x + per_sample(params["brightness"])).clamp(0.0, 1.0)
        x = x ** torch.exp(per_sample(params["gamma"]))
        sigma = per_sample(params["noise"])
        noise = torch.randn(tuple(x.shape), generator=generator, dtype=torch.float32).to(dev)
        x = (x + noise * sigma).clamp(0.0, 1.0)
        return (x * 255.0).to(image.dtype)


def apply_transforms(
    batch: Sample, a1: Tensor, a2: Tensor, size: tuple[int, int], *, sparse_nearest: bool = True
) -> Sample:
    """Resample a batched sample with per-sample affine maps (see the module docstring).

    Args:
        batch: batched sample dict.
        a1, a2: ``(B, 3, 3)`` maps from output pixel coordinates to input pixel coordinates of frame 1/2.
        size: output ``(height, width)``.
        sparse_nearest: nearest-neighbour flow/valid for samples with invalid pixels.
    """
    image1: Tensor = batch["image1"]
    in_h, in_w = image1.shape[-2:]
    h, w = size
    dev = image1.device
    coords1 = _grid(a1, h, w, in_h, in_w, dev)
    grid1 = _normalise(coords1, in_h, in_w)
    grid2 = _normalise(_grid(a2, h, w, in_h, in_w, dev), in_h, in_w)
    out = dict(batch)
    out["image1"] = _sample(image1.to(torch.float32), grid1, "bilinear", "border").to(image1.dtype)
    out["image2"] = _sample(batch["image2"].to(torch.float32), grid2, "bilinear", "border").to(image1.dtype)

    flow = batch.get("flow")
    if isinstance(flow, Tensor):
        flow = flow.to(torch.float32)
        valid = batch.get("valid")
        finite = torch.isfinite(flow).all(dim=1)
        valid_in = finite if not isinstance(valid, Tensor) else (valid.to(torch.bool) & finite)
        clean = torch.where(finite[:, None], flow, torch.zeros_like(flow))
        valid_f = valid_in.to(torch.float32)[:, None]
        flow_s = _sample(clean, grid1, "bilinear")
        valid_s = _sample(valid_f, grid1, "bilinear")[:, 0] > 0.999
        sparse = ~valid_in.flatten(1).all(dim=1)
        if sparse_nearest and bool(sparse.any()):
            nearest_flow = _sample(clean, grid1, "nearest")
            nearest_valid = _sample(valid_f, grid1, "nearest")[:, 0] > 0.5
            flow_s = torch.where(sparse[:, None, None, None], nearest_flow, flow_s)
            valid_s = torch.where(sparse[:, None, None], nearest_valid, valid_s)
        # Target in input frame 2, then into output frame 2 coordinates.
        target = coords1 + flow_s.permute(0, 2, 3, 1)
        inv2 = torch.linalg.inv(a2).to(device=dev, dtype=torch.float32)
        ox = inv2[:, 0, 0, None, None] * target[..., 0] + inv2[:, 0, 1, None, None] * target[..., 1]
        oy = inv2[:, 1, 0, None, None] * target[..., 0] + inv2[:, 1, 1, None, None] * target[..., 1]
        ox = ox + inv2[:, 0, 2, None, None]
        oy = oy + inv2[:, 1, 2, None, None]
        xs = torch.arange(w, dtype=torch.float32, device=dev).view(1, 1, w)
        ys = torch.arange(h, dtype=torch.float32, device=dev).view(1, h, 1)
        new_flow = torch.stack([ox - xs, oy - ys], dim=1)
        out["flow"] = torch.where(valid_s[:, None], new_flow, torch.zeros_like(new_flow))
        out["valid"] = valid_s
        occlusion = batch.get("occlusion")
        if isinstance(occlusion, Tensor):
            occ = _sample(occlusion.to(torch.float32)[:, None], grid1, "nearest")[:, 0] > 0.5
            outside = (ox < 0) | (ox > w - 1) | (oy < 0) | (oy > h - 1)
            out["occlusion"] = occ | outside
    elif isinstance(batch.get("valid"), Tensor):
        out["valid"] = _sample(batch["valid"].to(torch.float32)[:, None], grid1, "nearest")[:, 0] > 0.5
    return out


# ------------------------------------------------------------------------------------------ evaluation


class CenterCrop:
    """Crop the centre ``(height, width)`` of a sample or batch (images, flow, valid, occlusion).

    The flow values are unchanged (both frames are cropped alike); ``occlusion`` is only cropped.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        if size[0] <= 0 or size[1] <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.size = (int(size[0]), int(size[1]))

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"

    def __call__(self, sample: Sample) -> Sample:
        height, width = sample["image1"].shape[-2:]
        h, w = self.size
        if h > height or w > width:
            raise ValueError(f"CenterCrop: crop {h}x{w} is larger than the sample's {height}x{width}")
        y0, x0 = (height - h) // 2, (width - w) // 2
        out = dict(sample)
        for key in _SPATIAL_KEYS:
            value = out.get(key)
            if isinstance(value, Tensor):
                out[key] = value[..., y0 : y0 + h, x0 : x0 + w]
        return out


class Resize:
    """Resize a sample or batch, for evaluation at the network's input size.

    Args:
        size: target ``(height, width)``; or
        multiple_of: round each side *up* to a multiple of this (e.g. 64), keeping the rest.
        resize_flow: also resize ``flow``/``valid``/``occlusion`` (flow vectors scaled by the size ratio);
            False keeps the ground truth at the original resolution (the usual evaluation protocol:
            resize the network's output back instead).

    Images are resized bilinearly; dense flow bilinearly, flow of samples with invalid pixels and the masks
    nearest-neighbour.
    """

    def __init__(
        self, size: tuple[int, int] | None = None, multiple_of: int | None = None, resize_flow: bool = True
    ) -> None:
        if (size is None) == (multiple_of is None):
            raise ValueError("give exactly one of size and multiple_of")
        if size is not None and (size[0] <= 0 or size[1] <= 0):
            raise ValueError(f"size must be positive, got {size}")
        if multiple_of is not None and multiple_of <= 0:
            raise ValueError(f"multiple_of must be positive, got {multiple_of}")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.multiple_of = multiple_of
        self.resize_flow = resize_flow

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, multiple_of={self.multiple_of}, resize_flow={self.resize_flow})"

    def target(self, height: int, width: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        assert self.multiple_of is not None
        m = self.multiple_of
        return -(-height // m) * m, -(-width // m) * m

    def __call__(self, sample: Sample) -> Sample:
        batch, was_batched = _batched(sample)
        height, width = batch["image1"].shape[-2:]
        h, w = self.target(height, width)
        if (h, w) == (height, width):
            return sample
        out = dict(batch)
        for key in ("image1", "image2"):
            image = batch[key]
            out[key] = F.interpolate(
                image.to(torch.float32), size=(h, w), mode="bilinear", align_corners=False
            ).to(image.dtype)
        flow = batch.get("flow")
        if self.resize_flow and isinstance(flow, Tensor):
            valid = batch.get("valid")
            finite = torch.isfinite(flow).all(dim=1)
            valid_in = finite if not isinstance(valid, Tensor) else (valid.to(torch.bool) & finite)
            clean = torch.where(
                finite[:, None], flow.to(torch.float32), torch.zeros_like(flow, dtype=torch.float32)
            )
            dense = F.interpolate(clean, size=(h, w), mode="bilinear", align_corners=False)
            nearest = F.interpolate(clean, size=(h, w), mode="nearest")
            sparse = ~valid_in.flatten(1).all(dim=1)
            resized = torch.where(sparse[:, None, None, None], nearest, dense)
            ratio = torch.tensor([w / width, h / height], dtype=torch.float32, device=flow.device).view(
                1, 2, 1, 1
            )
            out["flow"] = resized * ratio
            out["valid"] = (
                F.interpolate(valid_in.to(torch.float32)[:, None], size=(h, w), mode="nearest")[:, 0] > 0.5
            )
            occlusion = batch.get("occlusion")
            if isinstance(occlusion, Tensor):
                occ = F.interpolate(occlusion.to(torch.float32)[:, None], size=(h, w), mode="nearest")
                out["occlusion"] = occ[:, 0] > 0.5
        return _unbatched(out, was_batched)


class Compose:
    """Apply transforms in order (each a callable on a sample dict)."""

    def __init__(self, transforms: Sequence[Any]) -> None:
        self.transforms = list(transforms)

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample
