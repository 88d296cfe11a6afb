"""Diffusion engine: schedules, Gaussian and flow-matching processes, samplers, guidance, noise priors."""

from keras_vdiff.diffusion.flow_matching import FlowMatching
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.diffusion.guidance import combine_guidance, guidance_scales
from keras_vdiff.diffusion.noise import mixed_video_noise
from keras_vdiff.diffusion.samplers import SAMPLERS, Sampler, get_sampler
from keras_vdiff.diffusion.schedules import NoiseSchedule, shift_flow_time
from keras_vdiff.diffusion.thresholding import Thresholding
