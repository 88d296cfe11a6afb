"""Latent video diffusion: train a frame-wise VAE on MovingMNIST, then a Latte in its latent space.

    KERAS_BACKEND=jax python examples/latent_diffusion.py
    python examples/latent_diffusion.py --smoke

1. `FrameVAE` (4x spatial compression, 4 latent channels) trains with `fit` on reconstruction + beta KL;
2. its latent scaling factor is estimated so the latents have unit standard deviation;
3. `VideoDiffusion(..., autoencoder=vae)` trains the frozen VAE's latents with `fit` and decodes samples.
"""

import argparse

import keras

import keras_vdiff as kv
from keras_vdiff.conventions import unit_range_to_uint8, videos_to_unit_range


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny data, one epoch each (for tests)")
    args = parser.parse_args(argv)
    num_videos = 16 if args.smoke else 3000
    data = kv.data.moving_mnist(num_videos, frame_size=16, num_frames=4, seed=0)
    videos = data["videos"]

    vae = kv.autoencoders.FrameVAE.from_preset("frame_vae_tiny", seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    vae.fit(videos, batch_size=8 if args.smoke else 32, epochs=1 if args.smoke else args.vae_epochs,
            verbose=0 if args.smoke else 1)
    unit = videos_to_unit_range(videos[:8])
    reconstruction = unit_range_to_uint8(keras.ops.convert_to_numpy(vae.decode(vae.encode(unit))))
    print(f"VAE reconstruction PSNR {kv.metrics.psnr(videos[:8], reconstruction):.1f} dB")
    vae.scaling_factor = vae.estimate_scaling_factor(videos, batch_size=8)
    vae.trainable = False

    latent_shape = vae.compute_latent_shape(videos.shape)[1:]  # (4, 4, 4, 4)
    backbone = kv.models.Latte(input_shape=latent_shape, patch_size=2, hidden_dim=64, num_layers=4, num_heads=4,
                               conditioning="class", num_classes=10, learn_sigma=False)
    model = kv.VideoDiffusion(backbone, kv.diffusion.GaussianDiffusion("cosine", prediction="v"), autoencoder=vae,
                              seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    model.fit({"videos": videos, "labels": data["digits"]}, batch_size=8 if args.smoke else 32,
              epochs=1 if args.smoke else args.epochs, verbose=0 if args.smoke else 1)
    samples = model.generate(labels=[3, 8], steps=4 if args.smoke else 50, guidance_scale=3.0)
    print("sampled", samples.shape, samples.dtype, "from latents", latent_shape)
    return samples


if __name__ == "__main__":
    main()
