"""Convert a diffusers pipeline (Latte-1, DiT) and sample it with keras_vdiff on any backend.

    huggingface-cli download maxin-cn/Latte-1 --local-dir Latte-1
    KERAS_BACKEND=jax python examples/convert_and_sample.py --diffusers Latte-1 \\
        --prompt "a dog wearing sunglasses on the beach" --dtype bfloat16 --save-preset latte_1

    huggingface-cli download facebook/DiT-XL-2-256 --local-dir DiT-XL-2-256
    python examples/convert_and_sample.py --diffusers DiT-XL-2-256 --label 207 --label 360

`--smoke` builds a tiny random LattePipeline with diffusers (the dev extras) in a temporary folder and runs
the same code on it: the path a real download takes, in seconds and offline.
"""

import argparse
import os
import tempfile

import keras_vdiff as kv
from keras_vdiff import training


def save_tiny_latte_pipeline(path):
    """A LattePipeline of tiny random components (diffusers + transformers) saved to ``path``."""
    import diffusers
    import transformers

    corpus = ["a dog runs on the beach", "a red car drives down a street", "the sun sets over the sea"]
    tokenizer_dir = os.path.join(path, "_tokenizer_source")
    os.makedirs(tokenizer_dir, exist_ok=True)
    import io
    import json

    import sentencepiece

    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 3), model_writer=proto, vocab_size=48, model_type="unigram", pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    with open(os.path.join(tokenizer_dir, "spiece.model"), "wb") as f:
        f.write(proto.getvalue())
    with open(os.path.join(tokenizer_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}, f)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    text_encoder = transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=64, d_model=16, d_kv=4, d_ff=24, num_layers=1, num_heads=2, feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=8, relative_attention_max_distance=16))
    transformer = diffusers.LatteTransformer3DModel(
        sample_size=8, num_layers=1, patch_size=2, attention_head_dim=4, num_attention_heads=2, caption_channels=16,
        in_channels=4, cross_attention_dim=8, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, video_length=2)
    vae = diffusers.AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                                  norm_num_groups=4, sample_size=16)
    pipeline = diffusers.LattePipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                       transformer=transformer, scheduler=diffusers.DDIMScheduler())
    pipeline.save_pretrained(os.path.join(path, "pipeline"), safe_serialization=True)
    return os.path.join(path, "pipeline")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--diffusers", help="a diffusers pipeline folder (model_index.json)")
    parser.add_argument("--prompt", action="append", default=None, help="text pipelines (Latte-1)")
    parser.add_argument("--label", action="append", type=int, default=None, help="class pipelines (DiT)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16"))
    parser.add_argument("--save-preset", default=None, help="also write the converted pipeline as a preset here")
    parser.add_argument("--output-dir", default="samples")
    parser.add_argument("--smoke", action="store_true", help="a tiny random LattePipeline, 2 steps (for tests)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        source = save_tiny_latte_pipeline(scratch) if args.smoke else args.diffusers
        if not source:
            parser.error("give --diffusers PATH (or --smoke)")
        pipeline = kv.convert.from_diffusers(source, dtype=args.dtype)
    if args.save_preset:
        pipeline.save_to_preset(args.save_preset)
    if pipeline.conditioning == "text":
        names = args.prompt or ["a dog runs on the beach"]
        condition = dict(prompts=names)
    else:
        labels = args.label or [207]
        names, condition = [f"label_{label}" for label in labels], dict(labels=labels)
    videos = pipeline.generate(**condition, steps=2 if args.smoke else args.steps, guidance_scale=args.guidance,
                               seed=0, progress=not args.smoke)
    paths = training.write_samples(videos, [training.slug(str(n)) for n in names], args.output_dir)
    print("\n".join(paths))
    return paths


if __name__ == "__main__":
    main()
