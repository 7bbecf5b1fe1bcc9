"""Training: ``python -m nucfast.train usenet|attention|pathgan|pathgan-encoder ...``;
 evaluation: ``python -m nucfast.train evaluate ...``.

For the main CLI, :func:`add_train_subparsers` / :func:`add_evaluate_subparser` add these sub-commands.
"""

from __future__ import annotations

import argparse

from .._evaluate import add_evaluate_arguments, run_evaluate_cli
from .attention import add_attention_arguments, run_attention_cli
from .nuc2vec import add_nuc2vec_arguments, run_nuc2vec_cli
from .pathgan import add_encoder_arguments, add_pathgan_arguments, run_encoder_cli, run_pathgan_cli
from .pathgan_eval import add_eval_arguments, run_eval_cli
from .usenet import add_usenet_arguments, run_usenet_cli

__all__ = ["add_train_subparsers", "add_evaluate_subparser", "main"]


def add_train_subparsers(subparsers) -> None:
    """Add ``usenet`` (and, when available, ``attention``) training sub-commands to an argparse subparsers
    object; each sets ``func`` so the caller runs ``args.func(args)``."""
    p = subparsers.add_parser("usenet", help="train USE-Net (supervised, instance label maps)")
    add_usenet_arguments(p)
    p.set_defaults(func=run_usenet_cli)

    p = subparsers.add_parser(
        "attention", help="train the self-supervised attention model (scale classification)"
    )
    add_attention_arguments(p)
    p.set_defaults(func=run_attention_cli)

    p = subparsers.add_parser(
        "nuc2vec", help="train the Nuc2Vec nucleus embedding (MoCo + alignment/uniformity, no labels)"
    )
    add_nuc2vec_arguments(p)
    p.set_defaults(func=run_nuc2vec_cli)

    p = subparsers.add_parser("pathgan", help="train PathologyGAN (RaGAN + gradient penalty) on tissue tiles")
    add_pathgan_arguments(p)
    p.set_defaults(func=run_pathgan_cli)

    p = subparsers.add_parser(
        "pathgan-encoder", help="train the PathologyGAN encoder (image -> w) on a generator's images"
    )
    add_encoder_arguments(p)
    p.set_defaults(func=run_encoder_cli)

    p = subparsers.add_parser("pathgan-eval", help="evaluate PathologyGAN on held-out tissue (JSON + PNG)")
    add_eval_arguments(p)
    p.set_defaults(func=run_eval_cli)


def add_evaluate_subparser(subparsers) -> None:
    """Add ``evaluate`` (per-image and mean AJI/AJI+/PQ/Dice on a MoNuSeg-layout directory)."""
    p = subparsers.add_parser("evaluate", help="evaluate a model on NAME.png + NAME_inst.tif pairs")
    add_evaluate_arguments(p)
    p.set_defaults(func=run_evaluate_cli)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nucfast.train", description="Train nucfast models")
    sub = ap.add_subparsers(dest="model", required=True)
    add_train_subparsers(sub)
    add_evaluate_subparser(sub)
    args = ap.parse_args(argv)
    return args.func(args)
