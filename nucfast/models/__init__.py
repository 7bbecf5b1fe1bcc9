"""The model layer: every network nucfast ships or builds, one registry of names, one :func:`load`.

- :func:`load` (``name | weights.safetensors | Model`` -> :class:`Model`), :func:`names`, :func:`spec`,
  :func:`build_network`; :func:`register` / :func:`register_kind` for the model modules.
- :class:`Model`: network + metadata + stain normaliser + working resolution (``mpp``), context
  (``halo``), ``predict`` (one sliding window, :func:`sliding_window`) and ``postprocess``.
- Weights I/O in safetensors (``save_weights``, ``load_weights``, checkpoints; never pickles).
- Networks: USE-Net (:mod:`.usenet`), the self-supervised attention network (:mod:`.attention`), the
  Nuc2Vec nucleus embedding (:mod:`.nuc2vec`, task ``nucleus-embedding``).

Names (the same in the Python API and every CLI subcommand):

=====================  ==============================================================================
``usenet``             USE-Net lite trained on MoNuSeg (the default segmentation model)
``usenet_lite``        the same architecture, untrained
``usenet_se_resnet50`` the paper's SE-ResNet-50 USE-Net, untrained
``attention``          the self-supervised attention network trained here (width 32)
``attention_lite``     the same architecture, untrained
``attention_paper``    the paper's width-64 attention network, untrained
``baseline``           the no-learning baseline (haematoxylin + Otsu + attention post-processing)
``nuc2vec``            Nuc2Vec nucleus embedding trained here (lite encoder, 64 px at 0.25 um/px)
``nuc2vec_lite``       the same architecture, untrained
``nuc2vec_paper``      the authors' ResNet-34 Nuc2Vec (128 px input), untrained
``pathgan``            PathologyGAN generator (CPU-sized, 56 px at 0.5 um/px) trained here (task
                       ``tile-generator``; :func:`nucfast.sample_tiles`)
``pathgan_encoder``    its encoder, image -> w (task ``tile-embedding``; :func:`nucfast.embed_tiles`)
``pathgan_discriminator``  the discriminator trained with ``pathgan`` (to continue training)
``pathgan_cpu`` / ``pathgan_encoder_cpu``      the CPU-sized networks, untrained
``pathgan_paper`` / ``pathgan_encoder_paper`` / ``pathgan_discriminator_paper``  the paper's 224-px
                       networks, untrained
=====================  ==============================================================================
"""

from . import attention, nuc2vec, pathgan, usenet
from ._registry import (
    MAX_PARAMETERS,
    WEIGHTS_DIR,
    Context,
    Kind,
    Model,
    ModelSpec,
    build_network,
    cpu_bf16,
    cpu_precision,
    kinds,
    load,
    names,
    register,
    register_kind,
    spec,
    tissue_pixels,
    unknown_model_error,
)
from ._sliding import dihedral_average, pad_to_multiple, sliding_window
from ._weights import (
    export_weights,
    file_sha256,
    load_checkpoint,
    load_weights,
    read_metadata,
    save_checkpoint,
    save_weights,
)
from .usenet import USENet, build_usenet, usenet_lite, usenet_se_resnet50

register_kind(Kind("baseline", task="segmentation", build=None, mpp=0.25, halo=64))

for _s in (
    ModelSpec(
        "usenet",
        "usenet",
        "USE-Net lite trained on MoNuSeg (default)",
        weights="usenet_lite.safetensors",
        config={"arch": "lite"},
    ),
    ModelSpec("usenet_lite", "usenet", "USE-Net lite architecture, untrained", config={"arch": "lite"}),
    ModelSpec(
        "usenet_se_resnet50",
        "usenet",
        "the paper's SE-ResNet-50 USE-Net, untrained",
        config={"arch": "se_resnet50"},
    ),
    ModelSpec(
        "attention",
        "attention",
        "self-supervised attention network trained here (width 32)",
        weights="attention.safetensors",
        config={"width": 32},
    ),
    ModelSpec(
        "attention_lite", "attention", "attention network of width 32, untrained", config={"width": 32}
    ),
    ModelSpec(
        "attention_paper",
        "attention",
        "the paper's width-64 attention network, untrained",
        config={"width": 64},
    ),
    ModelSpec(
        "nuc2vec",
        "nuc2vec",
        "Nuc2Vec nucleus embedding trained here on MoNuSeg nuclei (lite encoder)",
        weights="nuc2vec.safetensors",
        config={"arch": "lite"},
    ),
    ModelSpec("nuc2vec_lite", "nuc2vec", "Nuc2Vec lite encoder, untrained", config={"arch": "lite"}),
    ModelSpec(
        "nuc2vec_paper",
        "nuc2vec",
        "the authors' ResNet-34 Nuc2Vec (128 px), untrained",
        config={"arch": "paper"},
    ),
    ModelSpec(
        "baseline", "baseline", "no-learning baseline: haematoxylin + Otsu + attention post-processing"
    ),
    ModelSpec(
        "pathgan",
        "pathgan-generator",
        "PathologyGAN generator trained here (56 px tiles at 0.5 um/px)",
        weights="pathgan_generator.safetensors",
        config={"arch": "cpu"},
    ),
    ModelSpec(
        "pathgan_encoder",
        "pathgan-encoder",
        "PathologyGAN encoder (tile -> w) trained here on the generator's images",
        weights="pathgan_encoder.safetensors",
        config={"arch": "cpu"},
    ),
    ModelSpec(
        "pathgan_discriminator",
        "pathgan-discriminator",
        "the discriminator trained with pathgan (to continue training)",
        weights="pathgan_discriminator.safetensors",
        config={"arch": "cpu"},
    ),
    ModelSpec("pathgan_cpu", "pathgan-generator", "CPU-sized PathologyGAN generator, untrained",
              config={"arch": "cpu"}),  # fmt: skip
    ModelSpec("pathgan_encoder_cpu", "pathgan-encoder", "CPU-sized PathologyGAN encoder, untrained",
              config={"arch": "cpu"}),  # fmt: skip
    ModelSpec("pathgan_paper", "pathgan-generator", "the paper's 224-px PathologyGAN generator, untrained",
              config={"arch": "paper"}),  # fmt: skip
    ModelSpec("pathgan_encoder_paper", "pathgan-encoder", "the paper's 224-px encoder, untrained",
              config={"arch": "paper"}),  # fmt: skip
    ModelSpec("pathgan_discriminator_paper", "pathgan-discriminator",
              "the paper's 224-px discriminator, untrained", config={"arch": "paper"}),  # fmt: skip
):
    register(_s)

__all__ = [
    "Context",
    "MAX_PARAMETERS",
    "WEIGHTS_DIR",
    "Kind",
    "Model",
    "ModelSpec",
    "USENet",
    "attention",
    "build_network",
    "cpu_bf16",
    "cpu_precision",
    "build_usenet",
    "dihedral_average",
    "export_weights",
    "file_sha256",
    "kinds",
    "load",
    "load_checkpoint",
    "load_weights",
    "names",
    "nuc2vec",
    "pad_to_multiple",
    "pathgan",
    "read_metadata",
    "register",
    "register_kind",
    "save_checkpoint",
    "save_weights",
    "sliding_window",
    "spec",
    "tissue_pixels",
    "unknown_model_error",
    "usenet",
    "usenet_lite",
    "usenet_se_resnet50",
]
