"""DCGAN (Radford et al. 2016) generator and discriminator, and the adversarial losses.

Losses (../shared/EQUATIONS.md, "GAN", Goodfellow et al. 2014), written on the discriminator's logits l = logit d(x),
so that ln d = −softplus(−l) and ln(1 − d) = −softplus(l) stay finite:

    L_D = −mean_r ln d(x_r) − mean_g ln(1 − d(g(z)))  = mean softplus(−l_r) + mean softplus(l_g)
    L_G (non-saturating, default) = −mean ln d(g(z))  = mean softplus(−l_g)
    L_G (minimax)                 = +mean ln(1 − d(g(z))) = −mean softplus(l_g)
    hinge (Lim & Ye 2017):  L_D = mean relu(1 − l_r) + mean relu(1 + l_g),  L_G = −mean l_g
    R1 (Mescheder et al. 2018):  (γ/2) E_r ‖∇_x l(x_r)‖²

Shapes: z (B, latent_dim); images (B, C, H, W) in [-1, 1]; logits (B,).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' loader reads it from here)
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .modeling_utils import GenZooModelMixin

GAN_LOSSES = ("minimax", "non_saturating", "hinge")
GENERATOR_UPSAMPLINGS = ("transposed", "nearest")


def _check_sample_size(sample_size: int, num_levels: int, who: str) -> int:
    """The resolution at the generator's input / the discriminator's output: sample_size / 2^(levels − 1)."""
    factor = 2 ** (num_levels - 1)
    if not 16 <= sample_size <= 64 or sample_size % factor or sample_size // factor < 3:
        raise ValueError(
            f"{who}: sample_size {sample_size} must lie in [16, 64] and be divisible by {factor} (2^(levels − 1) for "
            f"{num_levels} block_out_channels) with at least 3 pixels left; e.g. 16, 28, 32, 64 with 3 levels"
        )
    return sample_size // factor


def check_class_labels(class_labels, num_classes: int | None, batch_size: int, device) -> torch.Tensor | None:
    """int / sequence / tensor → (B,) int64, or None; refuses labels for an unconditional model, labels out of
    [0, num_classes − 1], missing labels for a conditional one, and a wrong count."""
    if num_classes is None:
        if class_labels is not None:
            raise ValueError("class_labels were given but the model is unconditional (config.num_classes is None)")
        return None
    if class_labels is None:
        raise ValueError(f"the model is class-conditional: give class_labels in [0, {num_classes - 1}]")
    labels = torch.as_tensor(class_labels, dtype=torch.int64).flatten()
    if labels.numel() == 1:
        labels = labels.expand(batch_size)
    if labels.numel() != batch_size:
        raise ValueError(f"class_labels has {labels.numel()} labels for a batch of {batch_size}: give one, or one per image")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"class_labels must lie in [0, {num_classes - 1}], got {labels.tolist()}")
    return labels.to(device)


class DCGANGenerator(GenZooModelMixin, ConfigMixin):
    r"""
    z → image through transposed convolutions (DCGAN): a k×k transposed convolution from 1×1 to the first
    resolution, then ×2 upsampling transposed convolutions (kernel 4, stride 2), each followed by BatchNorm and
    ReLU, and a 3×3 convolution to `out_channels` with tanh. With `upsampling="nearest"` each ×2 level is instead
    a nearest-neighbour resize and a 3×3 convolution (Odena et al. 2016, "Deconvolution and checkerboard
    artifacts"): a stride-2 transposed convolution with kernel 4 gives the output pixels of each 2×2 cell
    different sums of kernel taps, a checkerboard that the resize-convolution cannot make (2.25× the
    multiply-adds of those levels).

    Parameters:
        latent_dim (`int`, defaults to 64): size of z.
        out_channels (`int`, defaults to 3): image channels.
        sample_size (`int`, defaults to 32): output resolution (16–64, divisible by 2^(len(block_out_channels) − 1)).
        block_out_channels (`tuple[int]`, defaults to `(256, 128, 64)`): widths from the lowest resolution up.
        num_classes (`int`, *optional*): class-conditional with this many classes; the label's embedding
            (`class_embed_dim`) is concatenated to z.
        class_embed_dim (`int`, defaults to 32): size of the label embedding.
        upsampling (`str`, defaults to `"transposed"`): the ×2 levels, `"transposed"` (DCGAN) or `"nearest"`
            (resize and 3×3 convolution).
    """

    @register_to_config
    def __init__(
        self,
        latent_dim: int = 64,
        out_channels: int = 3,
        sample_size: int = 32,
        block_out_channels: tuple[int, ...] = (256, 128, 64),
        num_classes: int | None = None,
        class_embed_dim: int = 32,
        upsampling: str = "transposed",
    ):
        super().__init__()
        if upsampling not in GENERATOR_UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {GENERATOR_UPSAMPLINGS}, got {upsampling!r}")
        first = _check_sample_size(sample_size, len(block_out_channels), "DCGANGenerator")
        self.class_embedding = nn.Embedding(num_classes, class_embed_dim) if num_classes else None
        in_dim = latent_dim + (class_embed_dim if num_classes else 0)
        layers = [nn.ConvTranspose2d(in_dim, block_out_channels[0], first, bias=False), nn.BatchNorm2d(block_out_channels[0]), nn.ReLU(True)]
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            if upsampling == "transposed":
                layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False))
            else:
                layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
            layers += [nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.Conv2d(block_out_channels[-1], out_channels, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def check_latents(self, z: torch.Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"latents must have shape (B, {self.config.latent_dim}) (latent_dim), got {tuple(z.shape)}")

    def forward(self, z: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, latent_dim) [and labels (B,)] → images (B, C, H, W) in [-1, 1]."""
        self.check_latents(z)
        labels = check_class_labels(class_labels, self.config.num_classes, z.shape[0], z.device)
        h = z if labels is None else torch.cat([z, self.class_embedding(labels).to(z.dtype)], dim=1)
        return self.net(h[:, :, None, None])  # (B, latent_dim [+ class_embed_dim], 1, 1) → (B, C, H, W)


DISCRIMINATOR_POOLINGS = ("sum", "flatten")


class MinibatchStd(nn.Module):
    """The minibatch standard deviation channel (Karras et al. 2018, "Progressive growing of GANs", §3): split the
    batch into groups of `group_size` images (image i joins group i mod B/group_size), take each feature's
    standard deviation over its group at every position, average those to one number per group and append it to
    every image of the group as a constant extra channel, so the discriminator sees how varied the batch is.

    A batch that `group_size` does not divide is grouped by the largest common divisor (a single image: std 0).
    (B, C, H, W) → (B, C + 1, H, W).
    """

    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        G = math.gcd(B, self.group_size)
        y = x.float().view(G, B // G, C, H, W)  # group members y[:, j]
        centred = y - y.mean(dim=0)  # (not Tensor.var over dim 0: ten times slower here)
        std = (centred.square().mean(dim=0) + 1e-8).sqrt()  # (B/G, C, H, W)
        stat = std.mean(dim=(1, 2, 3)).to(x.dtype)  # (B/G,) one number per group
        channel = stat.repeat(G)[:, None, None, None].expand(B, 1, H, W)  # image i gets its group's, i mod B/G
        return torch.cat([x, channel], dim=1)


class DCGANDiscriminator(GenZooModelMixin, ConfigMixin):
    r"""
    image → logit through strided convolutions (kernel 4, stride 2) with LeakyReLU(0.2) (DCGAN), BatchNorm after
    all but the first (none with spectral normalisation or `batch_norm=False`), features φ(x) and a linear head ψ.
    Class-conditional as a projection discriminator (Miyato & Koyama 2018): l(x, y) = ψ(φ(x)) + ⟨embed(y), φ(x)⟩.

    φ(x) is the last feature map summed over positions (`pooling="sum"`, SNGAN's head: the logit is a sum of
    patch scores, blind to where a patch lies) or flattened (`pooling="flatten"`, DCGAN's own head, a dense layer
    over the whole map, equivalent to its last full-size convolution: the logit sees absolute positions).

    Parameters:
        in_channels (`int`, defaults to 3), sample_size (`int`, defaults to 32).
        block_out_channels (`tuple[int]`, defaults to `(64, 128, 256)`): widths from the input resolution down.
        num_classes (`int`, *optional*): projection conditioning on this many classes.
        spectral_norm (`bool`, defaults to False): spectral normalisation of every weight (Miyato et al. 2018).
        pooling (`str`, defaults to `"sum"`): `"sum"` or `"flatten"`, how the last feature map becomes φ(x).
        batch_norm (`bool`, defaults to True): BatchNorm after all but the first level. Off (and without the
            minibatch-std channel), each image's logit depends on that image alone, as the R1 penalty assumes
            (Mescheder et al. 2018 and StyleGAN's discriminators have no normalisation).
        minibatch_std_group_size (`int`, defaults to 0): with a group size > 0, a `MinibatchStd` channel enters
            the last level (as in StyleGAN's discriminator, which has no BatchNorm to see the batch through).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        sample_size: int = 32,
        block_out_channels: tuple[int, ...] = (64, 128, 256),
        num_classes: int | None = None,
        spectral_norm: bool = False,
        pooling: str = "sum",
        batch_norm: bool = True,
        minibatch_std_group_size: int = 0,
    ):
        super().__init__()
        if pooling not in DISCRIMINATOR_POOLINGS:
            raise ValueError(f"pooling must be one of {DISCRIMINATOR_POOLINGS}, got {pooling!r}")
        if minibatch_std_group_size < 0:
            raise ValueError(f"minibatch_std_group_size must be 0 (off) or a group size >= 1, got {minibatch_std_group_size}")
        last_size = _check_sample_size(sample_size, len(block_out_channels), "DCGANDiscriminator")
        sn = _spectral_norm if spectral_norm else (lambda module: module)
        layers, c_in = [], in_channels
        for i, c_out in enumerate(block_out_channels):
            stride = 1 if i == 0 else 2  # the first level keeps the resolution: len(block_out_channels) − 1 halvings
            if minibatch_std_group_size and i == len(block_out_channels) - 1:
                layers.append(MinibatchStd(minibatch_std_group_size))
                c_in += 1
            layers.append(sn(nn.Conv2d(c_in, c_out, 3 if i == 0 else 4, stride=stride, padding=1)))
            if i > 0 and batch_norm and not spectral_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, True))
            c_in = c_out
        self.net = nn.Sequential(*layers)
        features = c_in * (last_size * last_size if pooling == "flatten" else 1)
        self.head = sn(nn.Linear(features, 1))
        self.class_embedding = sn(nn.Embedding(num_classes, features)) if num_classes else None

    def forward(self, images: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, C, H, W) [and labels (B,)] → logits (B,)."""
        expected = (self.config.in_channels, self.config.sample_size, self.config.sample_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape (B, {expected[0]}, {expected[1]}, {expected[2]}), got {tuple(images.shape)}")
        labels = check_class_labels(class_labels, self.config.num_classes, images.shape[0], images.device)
        feature_map = self.net(images)  # (B, c, h, w)
        if self.config.pooling == "flatten":
            features = feature_map.flatten(1)  # φ(x) (B, c·h·w)
        else:
            features = feature_map.sum(dim=(2, 3))  # φ(x) (B, c)
        logits = self.head(features).squeeze(1)  # ψ(φ(x)) (B,)
        if labels is not None:
            logits = logits + (self.class_embedding(labels).to(features.dtype) * features).sum(dim=1)
        return logits


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, loss: str = "minimax") -> torch.Tensor:
    """L_D: the cross-entropy of ../shared/EQUATIONS.md (for "minimax" and "non_saturating", which differ only in
    the generator's loss) or the hinge loss."""
    if loss == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if loss in ("minimax", "non_saturating"):
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()  # −ln d(x_r) − ln(1 − d(g(z)))
    raise ValueError(f"unknown GAN loss {loss!r}; choose one of {GAN_LOSSES}")


def generator_loss(fake_logits: torch.Tensor, loss: str = "non_saturating") -> torch.Tensor:
    """L_G: −ln d(g(z)) (non-saturating), ln(1 − d(g(z))) (minimax), or −l (hinge)."""
    if loss == "non_saturating":
        return F.softplus(-fake_logits).mean()
    if loss == "minimax":
        return -F.softplus(fake_logits).mean()
    if loss == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown GAN loss {loss!r}; choose one of {GAN_LOSSES}")


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """E_r ‖∇_x l(x_r)‖² (without the γ/2); `real_images` must require grad and `real_logits` come from them."""
    (gradients,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return gradients.float().pow(2).sum(dim=(1, 2, 3)).mean()
