"""The U-Net family's presets: plain data, registered by ``keras_vdiff.models.unet``."""

_DDPM = dict(paper="arXiv:2006.11239")
_VDM = dict(paper="arXiv:2204.03458")
_MAKE_A_VIDEO = dict(paper="arXiv:2209.14792")

UNET_PRESETS = {
    "unet2d_tiny": dict(
        class_name="UNet2D",
        config=dict(image_size=16, in_channels=3, dim=16, dim_mults=(1, 2), num_res_blocks=1,
                    attention_resolutions=(8,), num_heads=2, norm_groups=8, conditioning="class", num_classes=4,
                    learn_sigma=False),
        description="A tiny class-conditional DDPM U-Net for tests and CPU experiments (16x16x3, 4 classes); "
                    "inflate it with inflate_unet.",
        metadata=_DDPM,
    ),
    "unet2d_ddpm_cifar": dict(
        class_name="UNet2D",
        config=dict(image_size=32, in_channels=3, dim=128, dim_mults=(1, 2, 2, 2), num_res_blocks=2,
                    attention_resolutions=(16,), num_heads=1, norm_groups=32, dropout=0.1, learn_sigma=False),
        description="The DDPM CIFAR-10 U-Net (Ho et al. 2020): width 128, multipliers (1,2,2,2), attention at "
                    "16x16; random init.",
        metadata=_DDPM,
    ),
    "vdm_unet_small": dict(
        class_name="VDMUNet",
        config=dict(image_size=64, num_frames=16, in_channels=3, dim=64, dim_mults=(1, 2, 4, 8), num_res_blocks=2,
                    attention_resolutions=(16, 8), temporal_attention_resolutions="all", num_heads=4,
                    norm_groups=32, conv_type="spatial", relative_position_bias=True, learn_sigma=False),
        description="VDM 3D U-Net (Ho et al. 2022) at width 64, multipliers (1,2,4,8), 16 frames of 64x64x3, "
                    "1x3x3 convolutions, temporal attention with relative position bias at every level; random "
                    "init.",
        metadata=_VDM,
    ),
    "vdm_unet_tiny": dict(
        class_name="VDMUNet",
        config=dict(image_size=16, num_frames=4, in_channels=3, dim=16, dim_mults=(1, 2), num_res_blocks=1,
                    attention_resolutions=(8,), temporal_attention_resolutions="all", num_heads=2, norm_groups=8,
                    conv_type="spatial", relative_position_bias=True, conditioning="class", num_classes=4,
                    learn_sigma=False),
        description="A tiny class-conditional VDM 3D U-Net for tests and CPU experiments (4 frames of 16x16x3, "
                    "4 classes).",
        metadata=_VDM,
    ),
    "make_a_video_tiny": dict(
        class_name="MakeAVideoUNet",
        config=dict(image_size=16, num_frames=4, in_channels=3, dim=16, dim_mults=(1, 2), num_res_blocks=1,
                    attention_resolutions=(8,), num_heads=2, norm_groups=8, conditioning="class", num_classes=4,
                    fps_conditioning=True, learn_sigma=False),
        description="A tiny Make-A-Video pseudo-3D U-Net (the inflation of unet2d_tiny to 4 frames, with fps "
                    "conditioning).",
        metadata=_MAKE_A_VIDEO,
    ),
    "make_a_video_small": dict(
        class_name="MakeAVideoUNet",
        config=dict(image_size=64, num_frames=16, in_channels=3, dim=64, dim_mults=(1, 2, 4, 8), num_res_blocks=2,
                    attention_resolutions=(16, 8), num_heads=4, norm_groups=32, fps_conditioning=True,
                    learn_sigma=False),
        description="Make-A-Video pseudo-3D U-Net at width 64 (16 frames of 64x64x3, fps conditioning); random "
                    "init.",
        metadata=_MAKE_A_VIDEO,
    ),
}
