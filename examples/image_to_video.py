"""Image-to-video with masked-frame conditioning: the first frame is given, the model continues the motion.

    KERAS_BACKEND=jax python examples/image_to_video.py
    python examples/image_to_video.py --smoke

`FrameConditionedDiffusion` feeds the backbone `[z_t | m * z_0 | m]` (noisy latents, known frames,
frame mask); the Make-A-Video U-Net is built with those extra input channels. The same model
interpolates key frames or predicts the future with other masks (`mask_modes`).
"""

import argparse

import keras
import numpy as np

import keras_vdiff as kv
from keras_vdiff.diffusion.frame_masks import frame_condition_channels
from keras_vdiff.tasks import FrameConditionedDiffusion


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny data, one epoch (for tests)")
    args = parser.parse_args(argv)
    frames = 4
    data = kv.data.moving_mnist(16 if args.smoke else 3000, frame_size=16, num_frames=frames, seed=0)
    backbone = kv.models.MakeAVideoUNet.from_preset(
        "make_a_video_tiny", image_size=16, num_frames=frames, in_channels=1, conditioning=None, num_classes=None,
        fps_conditioning=False,
        num_extra_input_channels=frame_condition_channels(1))
    model = FrameConditionedDiffusion(backbone, kv.diffusion.GaussianDiffusion("cosine", prediction="v"),
                                      mask_modes=("first_frame",), seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    model.fit({"videos": data["videos"]}, batch_size=8 if args.smoke else 32, epochs=1 if args.smoke else args.epochs,
              verbose=0 if args.smoke else 1)
    first_frames = data["videos"][:2, 0]  # (2, 16, 16, 1) images
    videos = model.generate(known_frames=first_frames, steps=4 if args.smoke else 50, seed=0)
    error = np.abs(videos[:, 0].astype(int) - first_frames.astype(int)).mean()
    print(f"generated {videos.shape}; mean absolute error of frame 0 against the given image: {error:.1f}/255")
    return videos


if __name__ == "__main__":
    main()
