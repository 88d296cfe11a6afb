"""Official DiT checkpoints (facebookresearch/DiT) -> keras_vdiff DiT: weights, outputs and the CLI.

The reference below is a minimal PyTorch re-statement of the official
``models.py`` forward pass with its key names (timm's PatchEmbed, Attention and
Mlp written out). It is initialised with random weights everywhere, including
the adaLN and final layers that the official init zeroes, so every weight
influences the output the test compares.
"""

import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import keras_vdiff as kv  # noqa: E402
from conftest import to_numpy  # noqa: E402
from keras_vdiff import cli  # noqa: E402
from keras_vdiff.layers.embeddings import sincos_embedding_2d  # noqa: E402
from keras_vdiff.models.conversion import (  # noqa: E402
    dit_config_from_torch_state_dict,
    dit_from_torch_state_dict,
    load_torch_state_dict,
)

ATOL = 1e-4  # float32 on every backend


# --- the reference: official DiT structure and key names -----------------------------------------
def official_2d_sincos(dim, grid):
    """The official ``get_2d_sincos_pos_embed``: meshgrid(w, h), so the column coordinate fills the first half."""
    def one_axis(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    coords = np.stack(np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)), axis=0)
    return np.concatenate([one_axis(dim // 2, coords[0]), one_axis(dim // 2, coords[1])], axis=1)


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class PatchEmbed(nn.Module):
    def __init__(self, patch, channels, dim):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D), tokens row-major


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TimestepEmbedder(nn.Module):
    def __init__(self, dim, frequencies=256):
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t):
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes, dim):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)  # + null class (class_dropout_prob > 0)

    def forward(self, labels):
        return self.embedding_table(labels)


class DiTBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, dim, patch, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class ReferenceDiT(nn.Module):
    def __init__(self, input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4,
                 mlp_ratio=4.0, num_classes=10, learn_sigma=True):
        super().__init__()
        self.patch, self.out_channels = patch_size, in_channels * (2 if learn_sigma else 1)
        grid = input_size // patch_size
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        table = torch.from_numpy(official_2d_sincos(hidden_size, grid)).float().unsqueeze(0)
        self.pos_embed = nn.Parameter(table, requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)

    def unpatchify(self, x):
        c, p = self.out_channels, self.patch
        h = w = int(x.shape[1] ** 0.5)
        x = torch.einsum("nhwpqc->nchpwq", x.reshape(x.shape[0], h, w, p, p, c))
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x, t, y):
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        for block in self.blocks:
            x = block(x, c)
        return self.unpatchify(self.final_layer(x, c))


# --- helpers -------------------------------------------------------------------------------------
def reference_model(seed=0, **config):
    """The reference with PyTorch's default random init everywhere (nothing zeroed), in eval mode."""
    torch.manual_seed(seed)
    return ReferenceDiT(**config).eval()


def inputs(size=8, channels=4, num_classes=10, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((batch, size, size, channels)).astype("float32")
    timesteps = np.concatenate([[0.0, 999.0], rng.uniform(0, 1000, batch - 2)]).astype("float32")
    labels = np.concatenate([[num_classes], rng.integers(0, num_classes, batch - 1)]).astype("int32")  # null first
    return {"latents": latents, "timesteps": timesteps, "class_labels": labels}


def reference_output(model, x):
    with torch.no_grad():
        out = model(torch.from_numpy(x["latents"]).permute(0, 3, 1, 2), torch.from_numpy(x["timesteps"]),
                    torch.from_numpy(x["class_labels"]).long())
    return out.permute(0, 2, 3, 1).numpy()  # NCHW -> NHWC


def assert_matches_reference(backbone, reference, x):
    expected = reference_output(reference, x)
    assert np.abs(expected).mean() > 0.05  # the comparison is not blind (zeroed layers would give 0)
    np.testing.assert_allclose(to_numpy(backbone(x)), expected, atol=ATOL, rtol=0)


# --- tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config",
    [
        dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10,
             learn_sigma=True),
        dict(input_size=16, patch_size=4, in_channels=3, hidden_size=48, depth=1, num_heads=3, mlp_ratio=2.0,
             num_classes=5, learn_sigma=False),
    ],
    ids=["learn_sigma_patch2", "fixed_sigma_patch4"],
)
def test_converted_dit_matches_the_official_forward_pass(config):
    reference = reference_model(**config)
    backbone = dit_from_torch_state_dict(reference.state_dict(), num_heads=config["num_heads"])
    got = backbone.get_config()
    expected = dict(image_size=config["input_size"], patch_size=config["patch_size"],
                    in_channels=config["in_channels"], hidden_dim=config["hidden_size"], num_layers=config["depth"],
                    num_heads=config["num_heads"], mlp_ratio=config.get("mlp_ratio", 4.0),
                    num_classes=config["num_classes"], learn_sigma=config["learn_sigma"],
                    pos_embed_order="columns_first")
    assert {k: got[k] for k in expected} == expected
    x = inputs(config["input_size"], config["in_channels"], config["num_classes"])
    assert_matches_reference(backbone, reference, x)


def test_head_count_is_inferred_for_paper_widths_and_overridable():
    reference = reference_model()  # width 64, 4 heads: not a paper width, so the default is 64 / 64 = 1 head
    state_dict = reference.state_dict()
    assert dit_config_from_torch_state_dict(state_dict)["num_heads"] == 1
    wrong = dit_from_torch_state_dict(state_dict)
    x = inputs()
    assert np.abs(to_numpy(wrong(x)) - reference_output(reference, x)).max() > 1e-3  # heads matter
    assert_matches_reference(dit_from_torch_state_dict(state_dict, num_heads=4), reference, x)
    # Paper widths use the paper's head counts (XL: 1152 / 16 = 72 per head); shapes only, no model built.
    for width, heads in ((1152, 16), (1024, 16), (768, 12), (384, 6)):
        shapes = dict(state_dict)
        shapes["x_embedder.proj.weight"] = np.zeros((width, 4, 2, 2), "float32")
        shapes["pos_embed"] = sincos_embedding_2d(4, 4, width, order="columns_first")[None]
        shapes["blocks.0.mlp.fc1.weight"] = np.zeros((4 * width, width), "float32")
        assert dit_config_from_torch_state_dict(shapes)["num_heads"] == heads


def test_columns_first_table_is_the_official_one_and_the_default_is_unchanged():
    official = official_2d_sincos(32, 4)
    np.testing.assert_allclose(sincos_embedding_2d(4, 4, 32, order="columns_first"), official, atol=1e-6)
    ours = sincos_embedding_2d(4, 4, 32)
    np.testing.assert_allclose(ours, np.concatenate([official[:, 16:], official[:, :16]], axis=1), atol=1e-6)
    assert kv.models.DiT(image_size=8, in_channels=1, hidden_dim=32, num_layers=1, num_heads=2,
                         num_classes=2).get_config()["pos_embed_order"] == "rows_first"
    with pytest.raises(ValueError, match="pos_embed_order"):
        kv.models.DiT(image_size=8, in_channels=1, hidden_dim=32, num_layers=1, num_heads=2, num_classes=2,
                      pos_embed_order="diagonal")


def test_wrong_state_dicts_give_errors_naming_the_key_and_shapes():
    state_dict = reference_model().state_dict()

    missing = {k: v for k, v in state_dict.items() if k != "blocks.1.mlp.fc2.bias"}
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc2\.bias"):
        dit_from_torch_state_dict(missing, num_heads=4)

    bad_shape = dict(state_dict, **{"blocks.0.attn.proj.weight": torch.zeros(64, 32)})
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.proj\.weight.*\(32, 64\).*\(64, 64\)"):
        dit_from_torch_state_dict(bad_shape, num_heads=4)

    extra = dict(state_dict, **{"blocks.0.attn.q_norm.weight": torch.ones(16)})
    with pytest.raises(ValueError, match=r"no place for.*q_norm"):
        dit_from_torch_state_dict(extra, num_heads=4)

    learned_pos = dict(state_dict, pos_embed=torch.randn(1, 16, 64))
    with pytest.raises(ValueError, match="pos_embed.*sin-cos"):
        dit_from_torch_state_dict(learned_pos, num_heads=4)

    with pytest.raises(ValueError, match="x_embedder.proj.weight"):
        dit_from_torch_state_dict({"weight": torch.zeros(3)})
    with pytest.raises(TypeError, match="state dict"):
        dit_from_torch_state_dict([torch.zeros(3)])


def test_cli_convert_end_to_end(tmp_path, capsys):
    reference = reference_model(seed=1)
    # The official train.py's checkpoint layout: the EMA weights are the ones to convert.
    checkpoint = tmp_path / "DiT-tiny.pt"
    torch.save({"model": {}, "ema": reference.state_dict(), "args": {"model": "tiny"}}, checkpoint)
    output = tmp_path / "converted"
    assert cli.main(["convert", "--dit-checkpoint", str(checkpoint), "--output-dir", str(output),
                     "--num-heads", "4"]) == 0
    assert "num_heads=4" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["DiT-tiny.pt", "converted"]  # no staging left over
    backbone = kv.models.DiT.from_preset(str(output))
    assert_matches_reference(backbone, reference, inputs(seed=3))
    # An existing output is kept unless --overwrite.
    with pytest.raises(SystemExit, match="--overwrite"):
        cli.main(["convert", "--dit-checkpoint", str(checkpoint), "--output-dir", str(output)])
    assert cli.main(["convert", "--dit-checkpoint", str(checkpoint), "--output-dir", str(output),
                     "--num-heads", "4", "--overwrite"]) == 0
    assert_matches_reference(kv.models.DiT.from_preset(str(output)), reference, inputs(seed=4))


def test_failed_conversion_leaves_no_output_directory(tmp_path, monkeypatch):
    state_dict = reference_model().state_dict()
    del state_dict["final_layer.linear.bias"]
    checkpoint = tmp_path / "broken.pt"
    torch.save(state_dict, checkpoint)
    output = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"final_layer\.linear\.bias"):
        cli.main(["convert", "--dit-checkpoint", str(checkpoint), "--output-dir", str(output), "--num-heads", "4"])
    assert sorted(os.listdir(tmp_path)) == ["broken.pt"]

    # A failure while writing the preset (disk full, interrupt) leaves nothing either.
    torch.save(reference_model().state_dict(), checkpoint)

    def failing_save(self, preset_dir, **kwargs):
        open(os.path.join(preset_dir, "config.json"), "w").write("{")
        raise OSError("disk full")

    monkeypatch.setattr(kv.models.DiT, "save_to_preset", failing_save)
    with pytest.raises(OSError, match="disk full"):
        cli.main(["convert", "--dit-checkpoint", str(checkpoint), "--output-dir", str(output), "--num-heads", "4"])
    assert sorted(os.listdir(tmp_path)) == ["broken.pt"]

    with pytest.raises(SystemExit, match="--dit-checkpoint"):
        cli.main(["convert", "--dit-checkpoint", str(tmp_path / "missing.pt"), "--output-dir", str(output)])
    (tmp_path / "not_a_checkpoint.pt").write_text("hello")
    with pytest.raises(SystemExit, match="--dit-checkpoint"):
        cli.main(["convert", "--dit-checkpoint", str(tmp_path / "not_a_checkpoint.pt"), "--output-dir", str(output)])
    assert not output.exists()


def test_missing_torch_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match=r"keras-vdiff\[torch\]"):
        load_torch_state_dict(str(tmp_path / "any.pt"))


def test_convert_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["convert", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--dit-checkpoint", "--output-dir", "--num-heads", "--overwrite", "facebookresearch/DiT"):
        assert option in text
