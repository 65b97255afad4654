"""What a larger model input costs on this CPU: one decomposition training step and one estimate's forward pass at
each input size, median of repeats, as a ratio to the shipped model's 128 x 64 (the baseline, in the same run).

The input region is fixed in millimetres (280 x 140 mm, docs/hip-detection.md), so a larger input is a finer pixel:
128 x 64 is 2.2 mm per pixel, 256 x 128 1.1 mm, 512 x 256 (the paper's) 0.55 mm. The step is the one the stage
trainer takes (``bmdgan.training.trainer.StageTrainer._step`` without DDP): the generator's forward pass, the three
multi-scale discriminators on real and fake pairs and both backward passes, with the configuration's backbone,
batch size and loss weights. Training time per epoch scales with it (data loading aside). What the finer pixel
buys in accuracy is a training on whole-CT folds, not this script.

Usage: python benchmarks/bench_input_resolution.py [--config cpu] [--sizes 128x64,256x128,512x256] [--repeats 5]
       [--threads 2]
"""

from __future__ import annotations

import argparse
from functools import partial

from timing import median_seconds


def training_step(generator, discriminator, loss, x, y) -> None:
    """One stage-trainer micro-batch: D on real and fake pairs, then G through D with D's weights frozen."""
    import torch

    from bmdgan.training.trainer import real_and_fake

    fake = generator(x)
    real_part, fake_part = real_and_fake(discriminator(torch.cat([x, x]), torch.cat([y, fake.detach()])), len(x))
    loss.discriminator_loss(real_part, fake_part)[0].backward()
    discriminator.requires_grad_(False)
    real_part, fake_part = real_and_fake(discriminator(torch.cat([x, x]), torch.cat([y, fake])), len(x))
    loss.generator_loss(fake, y, fake_part, real_part)[0].backward()
    discriminator.requires_grad_(True)
    generator.zero_grad(set_to_none=True)
    discriminator.zero_grad(set_to_none=True)


def estimate_forward(generator, image) -> None:
    """The decomposition of one input, as ``estimate`` runs it."""
    import torch

    with torch.no_grad():
        generator(image)


def main() -> None:
    import torch

    from bmdgan.losses import DecompositionLoss
    from bmdgan.training.config import load_config
    from bmdgan.training.trainer import build_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--sizes", default="128x64,256x128,512x256", help="rows x columns, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    weights = config.loss_weights
    loss = DecompositionLoss(weights["l1"], weights["gc"], weights["fm"], config.gan_mode)
    torch.manual_seed(0)
    generator, discriminator = build_models(config)
    print(
        f"config {args.config}: backbone {config.backbone}, batch {config.batch_size}, {args.threads} threads, "
        f"median of {args.repeats}"
    )
    print("| input (rows x columns) | mm per pixel | training step (s) | ratio | estimate forward (s) | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    baseline = None
    for size in args.sizes.split(","):
        rows, columns = (int(n) for n in size.split("x"))
        x = torch.randn(config.batch_size, 1, rows, columns)
        y = torch.rand(config.batch_size, 1, rows, columns)

        generator.train()
        step_s = median_seconds(partial(training_step, generator, discriminator, loss, x, y), args.repeats)
        generator.eval()
        forward_s = median_seconds(partial(estimate_forward, generator, x[:1]), args.repeats)
        baseline = baseline or (step_s, forward_s)
        print(
            f"| {rows} x {columns} | {280.0 / rows:.2f} | {step_s:.3f} | {step_s / baseline[0]:.1f} | "
            f"{forward_s:.3f} | {forward_s / baseline[1]:.1f} |"
        )


if __name__ == "__main__":
    main()
