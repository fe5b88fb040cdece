"""Conditional generation from an image (one-to-many): a small CNN encodes the image, its
feature vector initialises the decoder's carry, and a recurrent `Decoder` emits the caption.

    decoder = Decoder(cells=(rnnlab.cells.make("gru", 64),), vocab_size=14, embed_dim=16,
                      init_size=64)                       # init_size = feature_dim
    model = Captioner(decoder=decoder, conv_features=(16, 32), feature_dim=64)
    params = model.init(rng, images, shift_right(captions))["params"]   # images [B, H, W, C]
    logits = model.apply({"params": params}, images, shift_right(captions))  # [B, T, vocab]
    tokens = rnnlab.models.seq2seq.decode(model, params, images, max_length=5)

Encoder: per entry f of `conv_features`, a 3x3 convolution with f channels, ReLU and 2x2 max
pooling; the map [B, H', W', C] is flattened into features = ReLU(W vec(map) + b) of width
`feature_dim`, which the decoder's `carry_from_features` maps to its first carry
(tanh(W f + b) per carry leaf). With an attention decoder (`memory_size` = the last conv width)
the decoder also attends over the H'·W' positions of the map ("show, attend and tell").
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlab.models.seq2seq import Decoder


class Captioner(nn.Module):
    """images [batch, H, W, C] float, inputs [batch, T] -> logits [batch, T, vocab]."""

    decoder: Decoder  # built with init_size = feature_dim (and memory_size = conv_features[-1]
    #                   when it attends)
    conv_features: tuple = (16, 32)  # channels of each conv + pool block
    feature_dim: int = 64  # width of the image feature vector
    dropout: float = 0.0  # on the feature vector and in the decoder (training only)
    unroll: int = 1  # decoder scan steps per compiled loop iteration (speed only)

    def setup(self):
        if self.decoder.init_size != self.feature_dim:
            raise ValueError(f"the decoder's init_size ({self.decoder.init_size}) must equal "
                             f"feature_dim ({self.feature_dim})")
        if not self.conv_features:
            raise ValueError("Captioner needs at least one conv block (conv_features)")
        self.convs = [nn.Conv(f, (3, 3), name=f"conv_{i}")
                      for i, f in enumerate(self.conv_features)]
        self.project = nn.Dense(self.feature_dim, name="features")
        self.decoder_params = self.param("decoder", self.decoder.init)

    def encode(self, images: jax.Array, train: bool = False):
        """images [batch, H, W, C] -> (Context over the feature map, the decoder's first carry).
        H and W must be divisible by 2^len(conv_features)."""
        if images.ndim != 4:
            raise ValueError(f"images must be [batch, height, width, channels], got shape "
                             f"{tuple(images.shape)}")
        x = images.astype(jnp.float32)
        for conv in self.convs:
            x = nn.max_pool(jax.nn.relu(conv(x)), (2, 2), strides=(2, 2))
        batch = x.shape[0]
        features = jax.nn.relu(self.project(x.reshape(batch, -1)))
        if train and self.dropout:
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.dropout,
                                        features.shape)
            features = jnp.where(keep, features / (1.0 - self.dropout), 0.0)
        memory = x.reshape(batch, -1, x.shape[-1])  # [batch, H'·W', C]
        mask = jnp.ones(memory.shape[:2], bool)
        p = self.decoder_params
        return (self.decoder.context(p, memory, mask),
                self.decoder.carry_from_features(p, features))

    def __call__(self, images: jax.Array, inputs: jax.Array, train: bool = False) -> jax.Array:
        ctx, carry = self.encode(images, train)
        rng = self.make_rng("dropout") if train and self.dropout else None
        return self.decoder.teacher_forced(self.decoder_params, ctx, carry, inputs,
                                           self.dropout, rng, self.unroll)


__all__ = ["Captioner"]
