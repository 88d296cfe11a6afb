"""Train any backbone family of keras_vdiff with `model.fit` on class-conditional MovingMNIST.

The 30 classes are (digit, motion) pairs, label = 3 * digit + motion. Every family starts from
its tiny preset with the shape and classes overridden, so the same script covers them all:

    KERAS_BACKEND=jax python examples/train_family.py --family latte --steps 300
    KERAS_BACKEND=torch python examples/train_family.py --family vdm_unet --smoke

Families: dit (image backbone; VideoDiffusion folds the frames into the batch), latte, gentron,
video_dit, snapvideo, rin, unet2d (image), vdm_unet, make_a_video.
"""

import argparse

import keras
import numpy as np

import keras_vdiff as kv

TRANSFORMERS = {"latte": "latte_tiny", "gentron": "gentron_tiny", "video_dit": "video_dit_tiny",
                "snapvideo": "snapvideo_tiny", "rin": "rin_tiny"}
UNETS = {"vdm_unet": "vdm_unet_tiny", "make_a_video": "make_a_video_tiny", "unet2d": "unet2d_tiny"}
FAMILIES = ("dit",) + tuple(TRANSFORMERS) + tuple(UNETS)


def build_backbone(family, frames, size):
    """The family's tiny preset, resized to ``frames`` x ``size`` x ``size`` x 1 with 30 classes."""
    classes = dict(conditioning="class", num_classes=30)
    if family == "dit":
        return kv.models.DiT.from_preset("dit_tiny", image_size=size, in_channels=1, num_classes=30)
    if family in TRANSFORMERS:
        preset = TRANSFORMERS[family]
        cls = getattr(kv.models, kv.presets.get_preset(preset)["class_name"])
        extra = {"text_dim": None} if "text_dim" in kv.presets.get_preset(preset)["config"] else {}
        return cls.from_preset(preset, input_shape=(frames, size, size, 1), patch_size=4, **classes, **extra)
    preset = UNETS[family]
    cls = getattr(kv.models, kv.presets.get_preset(preset)["class_name"])
    extra = {} if family == "unet2d" else {"num_frames": frames}
    if family == "make_a_video":
        extra["fps_conditioning"] = False  # the MovingMNIST batches carry no fps
    return cls.from_preset(preset, image_size=size, in_channels=1, **classes, **extra)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=FAMILIES, default="latte")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="a few steps on a few videos (for tests)")
    args = parser.parse_args(argv)
    num_videos, batch = (16, 8) if args.smoke else (2000, 32)
    steps = 2 if args.smoke else args.steps

    data = kv.data.moving_mnist(num_videos, frame_size=16, num_frames=args.frames, seed=0)
    labels = 3 * data["digits"] + data["motions"]
    backbone = build_backbone(args.family, args.frames, 16)
    print(backbone.describe())
    model = kv.VideoDiffusion(backbone, kv.diffusion.GaussianDiffusion("cosine", prediction="v"), seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    epochs = max(1, steps * batch // num_videos)
    history = model.fit({"videos": data["videos"], "labels": labels}, batch_size=batch, epochs=epochs,
                        verbose=0 if args.smoke else 1)
    print(f"loss {history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}")
    videos = model.generate(labels=[3 * 7 + 0, 3 * 2 + 1], steps=4 if args.smoke else 50, guidance_scale=3.0)
    print("sampled", videos.shape, videos.dtype)
    return videos


if __name__ == "__main__":
    main()
